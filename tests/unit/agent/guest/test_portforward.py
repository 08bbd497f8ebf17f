"""The agent's port forwarding (guest side) against a real loopback TCP server."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support.wait import wait_for
from vmcri.agent.guest.events import EventLog
from vmcri.agent.guest.portforward import PortForwards
from vmcri.api import agent_pb2
from vmcri.errors import NotFound, Unavailable


def _events(log: EventLog) -> list[agent_pb2.PortForwardData]:
    with log.cond:
        bodies = log.since(0)
    return [agent_pb2.Event.FromString(body).port_forward_data for _, body in bodies]


@pytest.fixture
def echo_server() -> tuple[int, list[bytes]]:
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                received.append(data)
                conn.sendall(data.upper())
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], received


def test_relays_both_ways_and_reports_eof(echo_server: tuple[int, list[bytes]]) -> None:
    port, received = echo_server
    log = EventLog()
    ports = PortForwards(log)
    opened = ports.open(agent_pb2.PortForwardOpenRequest(port=port))
    assert opened.window > 0
    sid = opened.stream_id
    ports.write(agent_pb2.PortForwardWriteRequest(stream_id=sid, data=b"abc", close_write=True))
    wait_for(lambda: any(e.eof for e in _events(log)), 5, "the EOF event")
    events = _events(log)
    assert b"".join(e.data for e in events) == b"ABC"
    assert events[-1].eof and not events[-1].error
    assert received == [b"abc"]
    ports.write(agent_pb2.PortForwardWriteRequest(stream_id=sid, close=True))
    with pytest.raises(NotFound):
        ports.write(agent_pb2.PortForwardWriteRequest(stream_id=sid, data=b"x"))


def test_window_stops_reading_until_consumed() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def flood() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"x" * 100_000)

    threading.Thread(target=flood, daemon=True).start()
    log = EventLog()
    ports = PortForwards(log, window=10_000)
    sid = ports.open(agent_pb2.PortForwardOpenRequest(port=listener.getsockname()[1])).stream_id
    wait_for(lambda: sum(len(e.data) for e in _events(log)) >= 10_000, 5, "a window of data")
    time.sleep(0.2)  # what is tested: nothing more is read in this time, as nothing is consumed
    held = sum(len(e.data) for e in _events(log))
    assert held < 10_000 + 32 * 1024  # one chunk past the window at most
    ports.write(agent_pb2.PortForwardWriteRequest(stream_id=sid, consumed=held))
    wait_for(lambda: sum(len(e.data) for e in _events(log)) > held, 5, "reading to resume")
    listener.close()


def test_closed_port_is_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(Unavailable):
        PortForwards(EventLog()).open(agent_pb2.PortForwardOpenRequest(port=port))
