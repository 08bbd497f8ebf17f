"""Slow clients without a token (slowloris) against the streaming server on loopback.

The attacker is whoever reaches the streaming port: on a node, any host-network pod
reaches 127.0.0.1, the address kubelet connects from too. It opens many connections and
trickles its request heads one byte at a time, reopening every connection the server
cuts, from several loopback addresses (all of 127.0.0.0/8 is loopback on Linux). Each
test bounds how many connections the attacker may open and stops it by itself.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration.streaming.clients import SpdyClient, spdy_exec
from tests.support.streaming_runtime import FakeRuntime
from vmcri.http.admission import AdmissionLimits
from vmcri.streaming.requests import ExecRequest, PortForwardRequest
from vmcri.streaming.server import ServerLimits, StreamingServer

HEAD = b"GET /exec/" + b"a" * 24 + b" HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"b" * 4000
SERVED_WITHIN_S = 5.0  # a legitimate exec while the attack goes on, start to exit status
HEAD_DEADLINE_S = 3.0  # "a few seconds" for the whole head, however it trickles


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    sent: int = 0


@dataclass
class Slowloris:
    """Keeps ``width`` trickling connections open until stopped or ``max_opens`` are used."""

    port: int
    sources: tuple[str, ...]
    width: int
    max_opens: int
    tick_s: float = 0.1
    opens: int = 0
    cut_after: list[float] = field(default_factory=list)  # seconds from open to the server's cut
    answers: list[bytes] = field(default_factory=list)
    open_now: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)  # width reached once
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self.stop.set()
        assert self._thread is not None
        self._thread.join(10)
        assert not self._thread.is_alive()

    @property
    def exhausted(self) -> bool:
        return self.opens >= self.max_opens

    def _open(self) -> _Conn | None:
        if self.exhausted:
            return None
        source = self.sources[self.opens % len(self.sources)]
        self.opens += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return _Conn(sock, time.monotonic())

    def _run(self) -> None:
        conns: list[_Conn] = []
        try:
            while not self.stop.is_set():
                while len(conns) < self.width and (conn := self._open()) is not None:
                    conns.append(conn)
                self.open_now = len(conns)
                if len(conns) >= self.width:
                    self.ready.set()
                for conn in list(conns):
                    if self._cut(conn):
                        conns.remove(conn)
                        conn.sock.close()
                    elif conn.sent < len(HEAD):
                        try:
                            conn.sock.send(HEAD[conn.sent : conn.sent + 1])
                            conn.sent += 1
                        except OSError:
                            pass  # the next round sees the cut
                self.stop.wait(self.tick_s)  # the attack's pace, not a synchronisation
        finally:
            for conn in conns:
                conn.sock.close()

    def _cut(self, conn: _Conn) -> bool:
        readable, _, _ = select.select([conn.sock], [], [], 0)
        if not readable:
            return False
        try:
            answer = conn.sock.recv(4096)
        except OSError:
            answer = b""
        self.cut_after.append(time.monotonic() - conn.opened)
        self.answers.append(answer)
        return True


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def server(runtime: FakeRuntime) -> Iterator[StreamingServer]:
    srv = StreamingServer(runtime, "127.0.0.1", 0, ServerLimits())  # the defaults are the defence
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def attack(server: StreamingServer) -> Iterator[Slowloris]:
    sources = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    attacker = Slowloris(server.port, sources, width=200, max_opens=6000, tick_s=0.2)
    attacker.start()
    yield attacker
    attacker.join()


def _exec() -> ExecRequest:
    return ExecRequest("c1", ("cat",), tty=False, stdin=True, stdout=True, stderr=True)


def test_exec_and_port_forward_are_served_during_a_slowloris(
    server: StreamingServer, attack: Slowloris
) -> None:
    assert attack.ready.wait(20), f"attacker opened only {attack.open_now} connections"
    for _ in range(5):
        started = time.monotonic()
        result = spdy_exec(server.url_for(_exec()), stdin=b"ping\n")
        assert result.status == {"metadata": {}, "status": "Success"}
        assert result.stdout == b"ping\n"
        assert time.monotonic() - started < SERVED_WITHIN_S

        started = time.monotonic()
        client = SpdyClient(
            server.url_for(PortForwardRequest("pod1", ())), protocols=("portforward.k8s.io",)
        )
        assert client.answer.status == 101
        client.open(streamtype="error", port="8080", requestid="0")
        data = client.open(streamtype="data", port="8080", requestid="0")
        client.write(data, b"hello")
        assert client.wait_data(data, b"HELLO").startswith(b"HELLO")
        client.close()
        assert time.monotonic() - started < SERVED_WITHIN_S
    assert not attack.exhausted, "the attack must still be going on"
    assert attack.open_now >= attack.width // 2


def test_trickling_connections_are_cut_after_the_head_timeout(server: StreamingServer) -> None:
    # Fewer than one peer's share, so that only the head deadline cuts them.
    attacker = Slowloris(server.port, ("127.0.0.1",), width=20, max_opens=40, tick_s=0.1)
    attacker.start()
    try:
        deadline = time.monotonic() + 15
        while len(attacker.cut_after) < 20 and time.monotonic() < deadline:
            attacker.stop.wait(0.05)  # polling a counter the attacker thread fills
    finally:
        attacker.join()
    assert len(attacker.cut_after) >= 20, "the server never cut a trickling connection"
    # Every connection sent a byte each tick until cut: the bytes did not extend the deadline.
    assert max(attacker.cut_after) < HEAD_DEADLINE_S + 1.0
    assert min(attacker.cut_after) >= server.limits.admission.head_timeout_s - 0.1
    assert server.limits.admission.head_timeout_s <= HEAD_DEADLINE_S
    assert all(a.startswith(b"HTTP/1.1 408") for a in attacker.answers)
    assert all(b"request head not received within" in a for a in attacker.answers)


def test_one_peer_cannot_push_out_another_peers_pending_head(runtime: FakeRuntime) -> None:
    # A long head deadline: only the flood may cut the victim's connection here.
    limits = ServerLimits(admission=AdmissionLimits(head_timeout_s=30.0))
    srv = StreamingServer(runtime, "127.0.0.1", 0, limits)
    srv.start()
    try:
        url = srv.url_for(_exec())
        path = url.split(str(srv.port), 1)[1]
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        ).encode()
        victim = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        victim.sendall(head[:20])  # half a head, then the flood from another address
        flood = Slowloris(srv.port, ("127.0.0.9",), width=200, max_opens=200, tick_s=0.01)
        flood.start()
        try:
            limit = srv.limits.admission.max_pending_per_peer
            deadline = time.monotonic() + 10
            while len(flood.cut_after) < 200 - limit and time.monotonic() < deadline:
                flood.stop.wait(0.01)  # polling a counter the attacker thread fills
            assert len(flood.cut_after) >= 200 - limit
        finally:
            flood.join()
        victim.sendall(head[20:])
        assert victim.recv(12) == b"HTTP/1.1 101"
        victim.close()
    finally:
        srv.stop()
