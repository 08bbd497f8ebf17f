"""WebSocket (RFC 6455), server side: the handshake key, frames, and a message connection.

Client frames must be masked (RFC 6455 section 5.1) and are bounded; fragmented messages
are reassembled up to ``max_message``; PING is answered; a CLOSE is echoed. A breach of the
protocol raises :class:`~vmcri.errors.ProtocolError`, and the connection closes with 1002.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from vmcri.errors import ProtocolError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 1 << 20

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


class Opcode(enum.IntEnum):
    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((client_key.strip() + GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def valid_client_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    """A frame; servers send unmasked frames, clients (``mask=True``) masked ones."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(bit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _unmask(payload, key)


def _unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class FrameDecoder:
    def __init__(self, *, expect_masked: bool = True, max_payload: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._expect_masked = expect_masked
        self._max = max_payload

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> WsFrame | None:
        """Raises ProtocolError for reserved bits, bad masking, oversize or bad control frames."""
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ProtocolError("websocket: reserved bits set (no extension was negotiated)")
        opcode = b0 & 0x0F
        if opcode not in Opcode.__members__.values():
            raise ProtocolError(f"websocket: unknown opcode {opcode}")
        masked = bool(b1 & 0x80)
        if masked != self._expect_masked:
            raise ProtocolError("websocket: frame masking is wrong for this direction")
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack_from(">H", buf, 2)[0]
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack_from(">Q", buf, 2)[0]
            pos = 10
        fin = bool(b0 & 0x80)
        if opcode >= Opcode.CLOSE and (length > 125 or not fin):
            raise ProtocolError("websocket: control frames must be short and unfragmented")
        if length > self._max:
            raise ProtocolError(f"websocket: frame of {length} bytes (limit {self._max})")
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return WsFrame(fin, opcode, _unmask(payload, key) if masked else payload)


class WebSocketClosed(Exception):
    """The connection is closed (by either side)."""


class WebSocketConnection:
    """Messages over an upgraded socket: one reader (receive) and many writers (send)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        initial: bytes = b"",
        idle_timeout: float,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        self._sock = sock
        self._decoder = FrameDecoder(max_payload=max_message)
        self._decoder.feed(initial)
        self._max = max_message
        self._idle = idle_timeout
        self._send_lock = threading.Lock()
        self._last_activity = time.monotonic()
        self.closed = threading.Event()

    def send(self, payload: bytes, opcode: int = Opcode.BINARY) -> None:
        """Raises WebSocketClosed."""
        if self.closed.is_set():
            raise WebSocketClosed("websocket is closed")
        with self._send_lock:
            try:
                self._sock.sendall(encode_frame(opcode, payload))
            except OSError as exc:
                self._teardown()
                raise WebSocketClosed(str(exc)) from exc
            self._last_activity = time.monotonic()

    def receive(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload).

        Raises WebSocketClosed at a close, EOF or idle timeout; ProtocolError (after closing
        with 1002 or 1009) when the peer breaks the protocol.
        """
        parts: list[bytes] = []
        size = 0
        first_opcode = 0
        while True:
            frame = self._next_frame()
            if frame.opcode == Opcode.PING:
                with contextlib.suppress(WebSocketClosed):
                    self.send(frame.payload, Opcode.PONG)
                continue
            if frame.opcode == Opcode.PONG:
                continue
            if frame.opcode == Opcode.CLOSE:
                code = struct.unpack(">H", frame.payload[:2])[0] if len(frame.payload) >= 2 else 0
                self.close(code or CLOSE_NORMAL)
                raise WebSocketClosed(f"peer closed the websocket ({code})")
            if frame.opcode == Opcode.CONTINUATION:
                if not parts:
                    self._fail("websocket: continuation without a message")
            elif parts:
                self._fail("websocket: new message inside a fragmented one")
            else:
                first_opcode = frame.opcode
            size += len(frame.payload)
            if size > self._max:
                self.close(CLOSE_TOO_BIG)
                raise ProtocolError(f"websocket: message over {self._max} bytes")
            parts.append(frame.payload)
            if frame.fin:
                return first_opcode, b"".join(parts)

    def _next_frame(self) -> WsFrame:
        self._sock.settimeout(min(self._idle, 5.0))
        while True:
            try:
                frame = self._decoder.next_frame()
            except ProtocolError as exc:
                self.close(CLOSE_PROTOCOL_ERROR)
                raise exc
            if frame is not None:
                return frame
            if self.closed.is_set():
                raise WebSocketClosed("websocket is closed")
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                if time.monotonic() - self._last_activity > self._idle:
                    self.close(CLOSE_NORMAL)
                    raise WebSocketClosed("idle timeout") from None
                continue
            except OSError as exc:
                self._teardown()
                raise WebSocketClosed(str(exc)) from exc
            if not data:
                self._teardown()
                raise WebSocketClosed("peer hung up")
            self._last_activity = time.monotonic()
            self._decoder.feed(data)

    def _fail(self, message: str) -> None:
        self.close(CLOSE_PROTOCOL_ERROR)
        raise ProtocolError(message)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send CLOSE once and shut the socket; never raises."""
        if self.closed.is_set():
            return
        with contextlib.suppress(WebSocketClosed):
            self.send(struct.pack(">H", code) + reason.encode()[:120], Opcode.CLOSE)
        self._teardown()

    def _teardown(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)  # no RST: let the peer read all
