"""Test clients of the streaming protocols: SPDY/3.1 (kubectl's and kubelet's) and WebSocket.

They speak the client side as client-go does: open the streams (or send channel-prefixed
messages), write stdin, read outputs and the status. The SPDY client reuses only the
frame codec of vmcri; stream bookkeeping, the HTTP upgrade and the roles are its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vmcri.streaming import spdy_frames as sf
from vmcri.streaming import websocket as ws

TIMEOUT = 30.0


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, list[str]]
    body: bytes


def _connect(url: str) -> tuple[socket.socket, str, str]:
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "::1", "localhost"), "tests stay on loopback"
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    return sock, target, f"{parts.hostname}:{parts.port}"


def _read_head(sock: socket.socket) -> tuple[HttpAnswer, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = defaultdict(list)
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()].append(value.strip())
    if status != 101:
        length = int(headers.get("content-length", ["0"])[0])
        while len(rest) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        return HttpAnswer(status, dict(headers), rest), b""
    return HttpAnswer(status, dict(headers), b""), rest


@dataclass
class _Stream:
    data: bytearray = field(default_factory=bytearray)
    replied: bool = False
    fin: bool = False
    reset: bool = False


class SpdyClient:
    """A SPDY client connection to a streaming URL."""

    def __init__(self, url: str, protocols: tuple[str, ...] = ("v4.channel.k8s.io",)) -> None:
        self.sock, path, host = _connect(url)
        request = [f"POST {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade"]
        request += ["Upgrade: SPDY/3.1", "Content-Length: 0"]
        request += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        self.sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        self.answer, rest = _read_head(self.sock)
        self._compressor = sf.HeaderCompressor()
        self._decoder = sf.FrameDecoder()
        self._decoder.feed(rest)
        self._cond = threading.Condition()
        self._streams: dict[int, _Stream] = defaultdict(_Stream)
        self._next_id = 1
        self.goaway = False
        self.closed = False
        self.frames: list[sf.Frame] = []
        if self.answer.status == 101:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                while (frame := self._decoder.next_frame()) is not None:
                    self._on(frame)
                data = self.sock.recv(65536)
                if not data:
                    break
                self._decoder.feed(data)
        except OSError:
            pass
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _on(self, frame: sf.Frame) -> None:
        with self._cond:
            self.frames.append(frame)
            if isinstance(frame, sf.SynReply):
                self._streams[frame.stream_id].replied = True
            elif isinstance(frame, sf.DataFrame):
                stream = self._streams[frame.stream_id]
                stream.data += frame.data
                stream.fin = stream.fin or frame.fin
            elif isinstance(frame, sf.RstStream):
                self._streams[frame.stream_id].reset = True
            elif isinstance(frame, sf.GoAway):
                self.goaway = True
            self._cond.notify_all()

    def _send(self, frame: sf.Frame) -> None:
        self.sock.sendall(sf.encode(frame, self._compressor))

    def open(self, **headers: str) -> int:
        """Open a stream with these headers (streamtype=..., port=...); wait for its reply."""
        sid = self._next_id
        self._next_id += 2
        self._send(sf.SynStream(sid, {k.lower(): v for k, v in headers.items()}))
        self._wait(lambda: self._streams[sid].replied or self._streams[sid].reset)
        return sid

    def write(self, sid: int, data: bytes, fin: bool = False) -> None:
        self._send(sf.DataFrame(sid, data, fin))

    def ping(self, ping_id: int = 1) -> None:
        self._send(sf.Ping(ping_id))

    def _wait(self, predicate: Callable[[], object], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("spdy test client: timed out")
                self._cond.wait(remaining)

    def wait_data(self, sid: int, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        s = self._streams[sid]
        self._wait(lambda: needle in s.data or s.fin or s.reset or self.closed, timeout)
        return bytes(s.data)

    def wait_bytes(self, sid: int, count: int, timeout: float = TIMEOUT) -> bytes:
        s = self._streams[sid]
        self._wait(lambda: len(s.data) >= count or s.fin or s.reset or self.closed, timeout)
        return bytes(s.data)

    def read_all(self, sid: int, timeout: float = TIMEOUT) -> bytes:
        """Everything on the stream until the server finished it (FIN, reset or hang-up)."""
        s = self._streams[sid]
        self._wait(lambda: s.fin or s.reset or self.closed, timeout)
        return bytes(s.data)

    def finished(self, sid: int) -> bool:
        with self._cond:
            return self._streams[sid].fin

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        self._wait(lambda: self.closed, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    status: dict[str, object]


def spdy_exec(
    url: str,
    *,
    stdin: bytes | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resize: tuple[int, int] | None = None,
) -> ExecResult:
    """Run an exec/attach URL to the end the way client-go's v4 protocol does."""
    client = SpdyClient(url)
    assert client.answer.status == 101, client.answer
    error = client.open(streamtype="error")
    sin = client.open(streamtype="stdin") if stdin is not None else 0
    sout = client.open(streamtype="stdout") if stdout else 0
    serr = client.open(streamtype="stderr") if stderr else 0
    if tty:
        rsz = client.open(streamtype="resize")
        if resize:
            client.write(rsz, json.dumps({"Width": resize[0], "Height": resize[1]}).encode())
    if sin:
        assert stdin is not None
        if stdin:
            client.write(sin, stdin)
        client.write(sin, b"", fin=True)
    status = json.loads(client.read_all(error) or b"{}")
    out = client.read_all(sout) if sout else b""
    err = client.read_all(serr) if serr else b""
    client.close()
    return ExecResult(out, err, status)


class WebSocketClient:
    """A websocket client for exec/attach channels (binary, channel byte first)."""

    def __init__(self, url: str, protocols: tuple[str, ...] = ("v5.channel.k8s.io",)) -> None:
        self.sock, path, host = _connect(url)
        key = base64.b64encode(os.urandom(16)).decode()
        request = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade"]
        request += ["Upgrade: websocket", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}"]
        if protocols:
            request += [f"Sec-WebSocket-Protocol: {', '.join(protocols)}"]
        self.sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        self.answer, rest = _read_head(self.sock)
        self.accept_ok = self.answer.headers.get("sec-websocket-accept", [""])[0] == (
            ws.accept_key(key)
        )
        self._decoder = ws.FrameDecoder(expect_masked=False)
        self._decoder.feed(rest)
        self.messages: list[tuple[int, bytes]] = []
        self.close_code: int | None = None
        self._cond = threading.Condition()
        self.closed = False
        if self.answer.status == 101:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                while (frame := self._decoder.next_frame()) is not None:
                    with self._cond:
                        if frame.opcode == ws.Opcode.CLOSE:
                            self.close_code = struct.unpack(">H", frame.payload[:2])[0]
                        elif frame.opcode == ws.Opcode.BINARY and frame.payload:
                            self.messages.append((frame.payload[0], frame.payload[1:]))
                        self._cond.notify_all()
                data = self.sock.recv(65536)
                if not data:
                    break
                self._decoder.feed(data)
        except OSError:
            pass
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def send(self, channel: int, data: bytes) -> None:
        self.sock.sendall(ws.encode_frame(ws.Opcode.BINARY, bytes([channel]) + data, mask=True))

    def send_raw(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.closed or self.close_code is not None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("websocket test client: timed out")
                self._cond.wait(remaining)

    def wait_channel(self, number: int, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                data = b"".join(d for ch, d in self.messages if ch == number)
                if needle in data or self.closed or self.close_code is not None:
                    return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("websocket test client: timed out")
                self._cond.wait(remaining)

    def channel(self, number: int) -> bytes:
        with self._cond:
            return b"".join(data for ch, data in self.messages if ch == number)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(ws.encode_frame(ws.Opcode.CLOSE, struct.pack(">H", 1000), mask=True))
        self.sock.close()


def ws_exec(url: str, *, stdin: bytes | None = None) -> ExecResult:
    client = WebSocketClient(url)
    assert client.answer.status == 101, client.answer
    assert client.accept_ok
    if stdin is not None:
        client.send(0, stdin)
        client.send(255, b"\x00")  # v5: close stdin
    client.wait_closed()
    status = json.loads(client.channel(3) or b"{}")
    result = ExecResult(client.channel(1), client.channel(2), status)
    client.close()
    return result
