"""AgentClient against a fake guest at the other end of a socketpair."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.wait import wait_for
from vmcri.agent import types
from vmcri.agent.client import AgentClient
from vmcri.agent.connection import SEND_TIMEOUT_S, EventCallback
from vmcri.agent.framing import HEADER, MAGIC, Frame, FrameKind, FrameReader, encode_frame
from vmcri.api import agent_pb2
from vmcri.errors import (
    AgentUnavailable,
    DeadlineExceeded,
    NotFound,
    ProtocolError,
    VmcriError,
)


class FakeGuest:
    """Plays the agent by hand: the test decides every byte it sends."""

    def __init__(self) -> None:
        self.host, self.sock = socket.socketpair()
        self.reader = FrameReader()
        self.sock.settimeout(5)

    def connector(self, url: str, timeout: float) -> socket.socket:
        return self.host

    def read_frame(self) -> Frame:
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            data = self.sock.recv(65536)
            assert data, "host closed"
            self.reader.feed(data)

    def send(self, kind: FrameKind, frame_id: int, body: bytes) -> None:
        self.sock.sendall(encode_frame(kind, frame_id, body))

    def handshake(self, prefix: bytes = b"", last_seq: int = 0) -> agent_pb2.Hello:
        frame = self.read_frame()
        assert frame.kind == FrameKind.HELLO
        hello = agent_pb2.Hello.FromString(frame.body)
        ack = agent_pb2.HelloAck(nonce=hello.nonce, protocol_version=1, last_seq=last_seq)
        self.sock.sendall(prefix + encode_frame(FrameKind.HELLO_ACK, 0, ack.SerializeToString()))
        return hello

    def answer(self, response: agent_pb2.Response) -> agent_pb2.Request:
        frame = self.read_frame()
        assert frame.kind == FrameKind.REQUEST
        self.send(FrameKind.RESPONSE, frame.frame_id, response.SerializeToString())
        return agent_pb2.Request.FromString(frame.body)


@pytest.fixture
def guest() -> Iterator[FakeGuest]:
    fake = FakeGuest()
    yield fake
    fake.sock.close()


def _client(
    guest: FakeGuest,
    *,
    on_event: EventCallback | None = None,
    connect_timeout: float = 10.0,
    call_timeout: float = 30.0,
    send_timeout: float = SEND_TIMEOUT_S,
) -> AgentClient:
    return AgentClient(
        "unix:///fake",
        connector=guest.connector,
        reconnect=False,
        on_event=on_event,
        connect_timeout=connect_timeout,
        call_timeout=call_timeout,
        send_timeout=send_timeout,
    )


def _in_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_handshake_skips_stale_bytes_and_calls_work(guest: FakeGuest) -> None:
    client = _client(guest)
    _in_thread(lambda: guest.handshake(prefix=b"stale tail of an old frame" + MAGIC))
    client.connect()
    ping = agent_pb2.PingResponse(agent_version="9.9", protocol_version=1, containers=2)
    _in_thread(lambda: guest.answer(agent_pb2.Response(ping=ping)))
    info = client.ping()
    assert (info.agent_version, info.containers) == ("9.9", 2)
    client.close()


def test_error_response_maps_to_exception_class(guest: FakeGuest) -> None:
    client = _client(guest)
    _in_thread(guest.handshake)
    client.connect()
    error = agent_pb2.Error(code="NOT_FOUND", message="no such container\x00")
    _in_thread(lambda: guest.answer(agent_pb2.Response(error=error)))
    with pytest.raises(NotFound, match="agent: no such container"):
        client.container_status("c1")
    client.close()


def test_call_times_out_and_a_late_answer_is_ignored(guest: FakeGuest) -> None:
    client = _client(guest, call_timeout=0.2)
    _in_thread(guest.handshake)
    client.connect()
    with pytest.raises(DeadlineExceeded):
        client.ping()
    frame = guest.read_frame()
    guest.send(FrameKind.RESPONSE, frame.frame_id, agent_pb2.Response(empty={}).SerializeToString())
    # Frames are read in order: the next call's answer comes after the late one was read.
    ping = agent_pb2.PingResponse(agent_version="9.9", protocol_version=1)
    _in_thread(lambda: guest.answer(agent_pb2.Response(ping=ping)))
    assert client.ping().agent_version == "9.9"
    assert client.connected
    client.close()


def test_create_waits_past_the_call_timeout_for_the_guests_own_runtime_error(
    guest: FakeGuest,
) -> None:
    # The guest bounds runc create itself and then says why it failed: the host must still
    # be listening then, whatever its timeout for quick calls
    client = _client(guest, call_timeout=0.1)
    _in_thread(guest.handshake)
    client.connect()
    error = agent_pb2.Error(code="UNKNOWN", message="runc create c1 failed: timed out")

    def answer_late() -> None:
        frame = guest.read_frame()
        time.sleep(0.4)  # the guest's runtime taking longer than call_timeout
        guest.send(
            FrameKind.RESPONSE, frame.frame_id, agent_pb2.Response(error=error).SerializeToString()
        )

    _in_thread(answer_late)
    with pytest.raises(VmcriError, match="runc create c1 failed: timed out") as info:
        client.create_container("c1", b"{}")
    assert not isinstance(info.value, DeadlineExceeded)
    client.close()


def test_an_unanswered_call_says_what_the_stall_hint_knows(guest: FakeGuest) -> None:
    hints = iter(["guest console ends with: rcu: INFO: rcu_sched self-detected stall", ""])
    client = AgentClient(
        "unix:///fake", connector=guest.connector, reconnect=False, call_timeout=0.2,
        stall_hint=lambda: next(hints),
    )  # fmt: skip
    _in_thread(guest.handshake)
    client.connect()
    with pytest.raises(DeadlineExceeded, match=r"within 0.2s; guest console ends with: rcu:"):
        client.ping()
    with pytest.raises(DeadlineExceeded) as info:  # nothing to say: the message as before
        client.ping()
    assert info.value.message == "agent call ping got no answer within 0.2s"
    client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,
        HEADER.pack(MAGIC, 1, int(FrameKind.EVENT), 0, 0, 10 << 20),
        encode_frame(FrameKind.RESPONSE, 999, b""),  # answer to a call never made
        encode_frame(FrameKind.REQUEST, 1, b""),  # the guest may not ask
        encode_frame(FrameKind.EVENT, 0, b"\xff\xff\xff"),  # undecodable
        encode_frame(
            FrameKind.EVENT,
            0,
            agent_pb2.Event(
                seq=1, container_exited=agent_pb2.ContainerExited(container_id="../etc")
            ).SerializeToString(),
        ),
        encode_frame(
            FrameKind.EVENT,
            0,
            agent_pb2.Event(
                seq=1, container_exited=agent_pb2.ContainerExited(container_id="c", exit_code=999)
            ).SerializeToString(),
        ),
    ],
)
def test_garbage_from_the_guest_drops_the_connection(guest: FakeGuest, garbage: bytes) -> None:
    client = _client(guest, call_timeout=5)
    _in_thread(guest.handshake)
    client.connect()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.ping()
        except Exception as exc:
            errors.append(exc)

    thread = _in_thread(call)
    guest.read_frame()
    guest.sock.sendall(garbage)
    thread.join(5)
    assert errors and isinstance(errors[0], AgentUnavailable)
    assert isinstance(client.last_error, ProtocolError)
    assert not client.connected
    client.close()


def test_wrong_result_kind_is_a_protocol_error(guest: FakeGuest) -> None:
    client = _client(guest)
    _in_thread(guest.handshake)
    client.connect()
    _in_thread(lambda: guest.answer(agent_pb2.Response(empty={})))
    with pytest.raises(ProtocolError):
        client.ping()
    assert not client.connected
    client.close()


def test_handshake_gives_up_on_endless_garbage(guest: FakeGuest) -> None:
    client = _client(guest, connect_timeout=10)

    def flood() -> None:
        guest.read_frame()
        try:
            for _ in range(100):
                guest.sock.sendall(b"\x00" * (1 << 20))
        except OSError:
            pass

    _in_thread(flood)
    with pytest.raises(ProtocolError, match="garbage"):
        client.connect()


def test_handshake_timeout(guest: FakeGuest) -> None:
    client = _client(guest, connect_timeout=0.3)
    with pytest.raises(AgentUnavailable, match="handshake"):
        client.connect()


def test_events_delivered_once_in_order_and_acked(guest: FakeGuest) -> None:
    got: list[types.AgentEvent] = []
    done = threading.Event()

    def on_event(event: types.AgentEvent) -> None:
        got.append(event)
        if len(got) == 3:
            done.set()

    client = _client(guest, on_event=on_event)
    _in_thread(guest.handshake)
    client.connect()
    out = agent_pb2.OutputChunk(container_id="c", stream=agent_pb2.OUTPUT_STREAM_STDERR, data=b"x")
    for seq in (1, 2, 2, 1):  # replays are skipped
        guest.send(FrameKind.EVENT, 0, agent_pb2.Event(seq=seq, output=out).SerializeToString())
    exited = agent_pb2.ContainerExited(container_id="c", exit_code=137, oom_killed=True)
    guest.send(
        FrameKind.EVENT, 0, agent_pb2.Event(seq=5, container_exited=exited).SerializeToString()
    )
    assert done.wait(5)
    assert [e.seq for e in got] == [1, 2, 5]
    assert isinstance(got[0], types.OutputChunk) and got[0].stream == "stderr"
    assert isinstance(got[2], types.ContainerExit) and got[2].oom_killed
    frame = guest.read_frame()
    assert frame.kind == FrameKind.ACK and agent_pb2.Ack.FromString(frame.body).seq >= 1
    client.close()


def test_close_drains_received_events_but_a_stuck_handler_does_not_hold_it(
    guest: FakeGuest,
) -> None:
    handled: list[int] = []
    release = threading.Event()

    def on_event(event: types.AgentEvent) -> None:
        if event.seq == 3:
            release.wait(30)  # a handler that does not come back (a log on a hung disk)
        handled.append(event.seq)

    client = _client(guest, on_event=on_event)
    _in_thread(guest.handshake)
    client.connect()
    out = agent_pb2.OutputChunk(container_id="c", stream=agent_pb2.OUTPUT_STREAM_STDOUT, data=b"x")
    for seq in (1, 2, 3, 4):
        guest.send(FrameKind.EVENT, 0, agent_pb2.Event(seq=seq, output=out).SerializeToString())
    wait_for(lambda: client._last_seq == 4, 5, "the events received")
    started = time.monotonic()
    client.close(drain_s=1.0)
    assert time.monotonic() - started < 5  # bounded by drain_s, not by the handler
    assert handled == [1, 2]  # handed over before close returned; 3 is still in the handler
    release.set()
    wait_for(lambda: handled == [1, 2, 3, 4], 5, "the rest after the handler returned")


def test_reconnect_sends_the_last_seen_seq() -> None:
    first, second = FakeGuest(), FakeGuest()
    peers = iter([first, second])
    delivered = threading.Event()
    client = AgentClient(
        "unix:///fake",
        connector=lambda url, timeout: next(peers).host,
        reconnect=True,
        on_event=lambda event: delivered.set(),
    )
    _in_thread(first.handshake)
    client.connect()
    exited = agent_pb2.ContainerExited(container_id="c", exit_code=1)
    first.send(
        FrameKind.EVENT, 0, agent_pb2.Event(seq=7, container_exited=exited).SerializeToString()
    )
    assert delivered.wait(5)  # seen, so the reconnect must ask for what follows seq 7
    hellos: list[agent_pb2.Hello] = []
    thread = _in_thread(lambda: hellos.append(second.handshake(last_seq=7)))
    first.sock.close()  # the guest side drops: the client reconnects by itself
    thread.join(5)
    assert hellos and hellos[0].ack_seq == 7
    wait_for(lambda: client.connected, 5, "the client to reconnect")
    client.close()
    second.sock.close()


def test_a_send_the_guest_does_not_take_fails_within_its_deadline(guest: FakeGuest) -> None:
    client = _client(guest, send_timeout=0.3, call_timeout=30)
    _in_thread(guest.handshake)
    client.connect()  # the guest reads nothing from now on
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match=r"did not take the frame within 0\.3s"):
        client.write_stdin("c1", b"x" * (900 * 1024))
    assert time.monotonic() - started < 1.5
    assert not client.connected  # a frame cut short leaves the stream unusable
    assert client.budget.used == 0
    client.close()


def test_a_sender_behind_a_stuck_one_gives_up_too(guest: FakeGuest) -> None:
    client = _client(guest, send_timeout=0.5, call_timeout=30)
    _in_thread(guest.handshake)
    client.connect()
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            client.write_stdin("c1", b"x" * (900 * 1024))
        except BaseException as exc:
            errors.append(exc)

    first = _in_thread(stuck)
    started = time.monotonic()
    wait_for(client._send_lock.locked, 2, "the first sender to hold the send lock")
    with pytest.raises(AgentUnavailable):
        client.ping()
    assert time.monotonic() - started < 2.0
    first.join(2)
    assert errors and isinstance(errors[0], AgentUnavailable)
    client.close()


def test_a_quiet_guest_is_not_a_send_timeout(guest: FakeGuest) -> None:
    client = _client(guest, send_timeout=0.1)
    _in_thread(guest.handshake)
    client.connect()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # several send deadlines without a byte to read
        assert client.connected
        time.sleep(0.05)
    _in_thread(lambda: guest.answer(agent_pb2.Response(ping=agent_pb2.PingResponse())))
    client.ping()
    client.close()


def test_a_guest_that_breaks_the_protocol_right_after_the_handshake_is_reconnected() -> None:
    """The race on the reconnect flag, made certain: the reconnector's connect() succeeds,
    and before that loop ends the reader drops the new connection (the guest sent a frame
    of an unknown kind at once). The client must connect again, not stay disconnected."""
    first, breaker, third = FakeGuest(), FakeGuest(), FakeGuest()
    peers = iter([first, breaker, third])
    reconnects: list[bool] = []

    def on_reconnect() -> None:
        # Runs in the reconnector after its connect() succeeded: hold it there until the
        # reader has dropped the connection, which is the losing order of the race.
        if not reconnects:
            breaker.send(FrameKind.HELLO, 0, b"")  # a HELLO from the guest: a breach
            wait_for(lambda: isinstance(client.last_error, ProtocolError), 5, "the breach")
        reconnects.append(client.connected)

    client = AgentClient(
        "unix:///fake",
        connector=lambda url, timeout: next(peers).host,
        reconnect=True,
        on_reconnect=on_reconnect,
    )
    _in_thread(first.handshake)
    client.connect()
    _in_thread(breaker.handshake)
    third_hello = _in_thread(third.handshake)
    first.sock.close()  # the guest drops: the client reconnects, to the breaker
    third_hello.join(5)
    wait_for(lambda: client.connected, 5, "a reconnect after the breach")
    assert reconnects[0] is False  # the breaker's connection was gone when the loop looked
    client.close()
    for peer in (first, breaker, third):
        peer.sock.close()


def test_on_reconnect_runs_once_the_link_is_back() -> None:
    first, second = FakeGuest(), FakeGuest()
    peers = iter([first, second])
    reconnected = threading.Event()
    client = AgentClient(
        "unix:///fake",
        connector=lambda url, timeout: next(peers).host,
        reconnect=True,
        on_reconnect=reconnected.set,
    )
    _in_thread(first.handshake)
    client.connect()
    assert not reconnected.is_set()  # the first connection is not a reconnect
    thread = _in_thread(second.handshake)
    first.sock.close()  # the guest side drops: the client reconnects by itself
    thread.join(5)
    assert reconnected.wait(5)
    assert client.connected
    client.close()
    second.sock.close()
