"""Exec/attach over SPDY (``v4.channel.k8s.io``, and v3/v2): one client-opened stream per role.

The client opens an ``error`` stream, then ``stdin``/``stdout``/``stderr`` as asked, then
``resize`` when it has a tty (v3+), each named by its ``streamType`` header. The server
waits (bounded) for exactly those, writes output on stdout/stderr, the status on error
(metav1.Status JSON in v4; a plain message, or nothing on success, before), and hangs up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from vmcri.errors import ProtocolError
from vmcri.streaming.remotecommand import ClientGone, Outcome, parse_sizes
from vmcri.streaming.spdy_conn import SpdyConnection, SpdyStream, StreamClosed

V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
PROTOCOLS = (V4, V3, V2)
LINGER_S = 2.0


def expected_roles(
    protocol: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
) -> set[str]:
    roles = {"error"}
    roles |= {name for name, on in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)) if on}
    if tty and protocol in (V4, V3):
        roles.add("resize")
    return roles


def collect_streams(conn: SpdyConnection, roles: set[str], timeout: float) -> dict[str, SpdyStream]:
    """Wait until the client opened one stream per role.

    Raises ProtocolError for an unknown or repeated role, or when they do not come in time.
    """
    streams: dict[str, SpdyStream] = {}
    deadline = time.monotonic() + timeout
    while set(streams) != roles:
        remaining = deadline - time.monotonic()
        stream = conn.accept(remaining) if remaining > 0 else None
        if stream is None:
            missing = ", ".join(sorted(roles - set(streams)))
            raise ProtocolError(f"client did not open the streams it asked for ({missing})")
        role = stream.header("streamtype")
        if role not in roles or role in streams:
            stream.abort()
            raise ProtocolError(f"unexpected stream type {role[:40]!r}")
        streams[role] = stream
    return streams


class SpdyCommandChannels:
    def __init__(
        self,
        conn: SpdyConnection,
        streams: dict[str, SpdyStream],
        protocol: str,
        cmd: Sequence[str],
    ) -> None:
        self._conn = conn
        self._streams = streams
        self._protocol = protocol
        self._cmd = tuple(cmd)

    def read_stdin(self) -> bytes:
        stream = self._streams.get("stdin")
        if stream is None:
            return b""
        return stream.read() or b""

    def resizes(self) -> Iterator[tuple[int, int]]:
        stream = self._streams.get("resize")
        if stream is None:
            return
        buffer = bytearray()
        while data := stream.read():
            buffer += data
            yield from parse_sizes(buffer)

    def write(self, stream: str, data: bytes) -> None:
        target = self._streams.get(stream)
        if target is None:
            return  # the client did not ask for this stream: drop it, as kubelet does
        try:
            target.write(data)
        except StreamClosed as exc:
            raise ClientGone(str(exc)) from exc

    def finish(self, outcome: Outcome) -> None:
        for role in ("stdout", "stderr"):
            if role in self._streams:
                self._streams[role].close()
        error = self._streams["error"]
        body = (
            outcome.status_json(self._cmd)
            if self._protocol == V4
            else outcome.status_text(self._cmd)
        )
        with contextlib.suppress(StreamClosed):
            if body:
                error.write(body)
        error.close()
        self._conn.linger(LINGER_S)

    def wait_gone(self) -> None:
        self._conn.closed.wait()
