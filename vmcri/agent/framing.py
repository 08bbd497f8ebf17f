"""Frames on the agent channel: a fixed header and a protobuf body.

The channel is one byte stream without message boundaries (a virtio-serial port, a vsock or
unix socket), so both ends cut it into frames::

    offset size  field
    0      4     magic    b"VMCA"
    4      1     version  1
    5      1     kind     FrameKind (HELLO, HELLO_ACK, REQUEST, RESPONSE, EVENT, ACK)
    6      2     flags    0 (reserved; a non-zero value is a protocol error)
    8      4     id       request id (REQUEST/RESPONSE), 0 otherwise; big-endian
    12     4     length   body length in bytes, at most ``max_body``; big-endian
    16     ...   body     a serialized message of proto/agent.proto

Why resynchronisation exists: a virtio-serial port survives the host side disconnecting, so a
new connection can start with the tail of a frame written for the previous one. Each end
therefore looks for the first frame of a connection (HELLO on the guest, HELLO_ACK with the
right nonce on the host) with :meth:`FrameReader.scan_for`, which skips anything before it;
after that the stream is strict and any malformed header is a :class:`ProtocolError`.

This module is imported by the guest agent: standard library and vmcri.errors only, and
nothing heavy: no dataclasses, whose import costs ~0.1 s of the agent's start under TCG.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import NamedTuple

from vmcri.errors import InvalidArgument, ProtocolError

MAGIC = b"VMCA"
VERSION = 1
HEADER = struct.Struct(">4sBBHII")
HEADER_SIZE = HEADER.size
MAX_BODY = 1 << 20
"""Largest body either end accepts (1 MiB); both ends enforce it."""


class FrameKind(IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    REQUEST = 3
    RESPONSE = 4
    EVENT = 5
    ACK = 6


class Frame(NamedTuple):
    kind: FrameKind
    frame_id: int
    body: bytes


def encode_frame(kind: FrameKind, frame_id: int, body: bytes, *, max_body: int = MAX_BODY) -> bytes:
    """Return header + body for one frame.

    Raises:
        InvalidArgument: the body is larger than ``max_body`` or the id does not fit 32 bits.
    """
    if len(body) > max_body:
        raise InvalidArgument(f"frame body of {len(body)} bytes exceeds the maximum {max_body}")
    if not 0 <= frame_id <= 0xFFFFFFFF:
        raise InvalidArgument(f"frame id {frame_id} does not fit 32 bits")
    return HEADER.pack(MAGIC, VERSION, int(kind), 0, frame_id, len(body)) + body


_INVALID = Frame(FrameKind.ACK, 0, b"")
"""Sentinel of :meth:`FrameReader._candidate` for a header that cannot be a frame."""


class FrameReader:
    """Accumulates bytes from the stream and cuts them into frames.

    The buffer never holds more than one maximal frame plus the last chunk fed, as long as the
    owner takes frames out after each :meth:`feed`.
    """

    def __init__(self, *, max_body: int = MAX_BODY) -> None:
        self._max_body = max_body
        self._buf = bytearray()
        self.discarded = 0
        """Bytes skipped by :meth:`scan_for` since the last :meth:`reset`."""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget everything buffered (the connection under it was replaced)."""
        self._buf.clear()
        self.discarded = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None if more bytes are needed.

        Raises:
            ProtocolError: the buffered bytes do not start with a valid header.
        """
        if len(self._buf) < HEADER_SIZE:
            return None
        magic, version, kind, flags, frame_id, length = HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            raise ProtocolError(f"bad frame magic {bytes(magic)!r}")
        if version != VERSION:
            raise ProtocolError(f"unsupported frame version {version}")
        if flags != 0:
            raise ProtocolError(f"unsupported frame flags {flags:#x}")
        try:
            frame_kind = FrameKind(kind)
        except ValueError as exc:
            raise ProtocolError(f"unknown frame kind {kind}") from exc
        if length > self._max_body:
            raise ProtocolError(f"frame of {length} bytes exceeds the maximum {self._max_body}")
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        return Frame(frame_kind, frame_id, body)

    def scan_for(self, kind: FrameKind, accept: Callable[[Frame], bool]) -> Frame | None:
        """Skip bytes until a complete frame of ``kind`` that ``accept`` approves; return it.

        Every occurrence of the header prefix is a candidate, in stream order. A complete
        candidate that ``accept`` rejects is skipped; an incomplete one keeps the bytes from its
        start buffered (it may be the real frame) while later candidates are still tried, since
        a stale header can claim a body that swallows the real frame. Returns None when more
        bytes are needed. Bytes that can no longer start a frame are dropped and counted in
        ``discarded`` so that the caller can give up after a bound.

        Raises nothing but what ``accept`` raises: garbage is what this method is for.
        """
        prefix = MAGIC + bytes([VERSION, int(kind)])
        keep_from: int | None = None
        pos = self._buf.find(prefix)
        while pos >= 0:
            frame = self._candidate(pos, kind)
            if frame is None:
                if keep_from is None:
                    keep_from = pos
            elif frame is not _INVALID and accept(frame):
                del self._buf[: pos + HEADER_SIZE + len(frame.body)]
                self.discarded += pos
                return frame
            pos = self._buf.find(prefix, pos + 1)
        if keep_from is None:
            keep_from = max(0, len(self._buf) - (len(prefix) - 1))
        self._drop(keep_from)
        return None

    def _candidate(self, pos: int, kind: FrameKind) -> Frame | None:
        """The frame starting at ``pos``, None if incomplete, ``_INVALID`` if impossible."""
        if len(self._buf) - pos < HEADER_SIZE:
            return None
        _magic, _version, _kind, flags, frame_id, length = HEADER.unpack_from(self._buf, pos)
        if flags != 0 or length > self._max_body:
            return _INVALID
        end = pos + HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        return Frame(kind, frame_id, bytes(self._buf[pos + HEADER_SIZE : end]))

    def _drop(self, count: int) -> None:
        if count > 0:
            del self._buf[:count]
            self.discarded += count
