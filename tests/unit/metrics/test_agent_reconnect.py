"""The agent client tells its owner about each reconnect (vmcri_agent_reconnects_total)."""

from __future__ import annotations

import threading

from tests.unit.agent.test_client import FakeGuest, _in_thread
from vmcri.agent.client import AgentClient


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
