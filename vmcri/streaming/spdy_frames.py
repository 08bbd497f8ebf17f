"""SPDY/3.1 frames: encoding, incremental decoding, and the zlib header blocks.

Only what the Kubernetes streaming protocols use. Every frame starts with 8 bytes::

    control:  1 | version (15) | type (16) | flags (8) | length (24) | data
    data:     0 | stream id (31)            | flags (8) | length (24) | data

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``count, (len, name, len, value)*``
with 32-bit big-endian lengths, compressed with one zlib stream per direction for the
whole connection, primed with :data:`HEADER_DICTIONARY` and sync-flushed after each
block. Everything read is untrusted: lengths, counts and the inflated size are bounded
and a breach raises :class:`~vmcri.errors.ProtocolError`.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

from vmcri.errors import ProtocolError
from vmcri.streaming.spdy_dictionary import HEADER_DICTIONARY

VERSION = 3
HEADER_BYTES = 8
MAX_FRAME_BODY = (1 << 24) - 1  # 24-bit length field
MAX_ACCEPTED_BODY = 1 << 20  # what we read from a peer; kubectl sends at most 32 KiB
MAX_HEADER_BLOCK = 64 * 1024  # inflated header block
MAX_HEADERS = 64

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


Headers = dict[str, str]
"""Lower-case names; several values of one name joined by NUL, as on the wire."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]  # (flags, id, value)


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (
    DataFrame
    | SynStream
    | SynReply
    | HeadersFrame
    | RstStream
    | Settings
    | Ping
    | GoAway
    | WindowUpdate
)


class HeaderCompressor:
    """One direction's zlib stream for header blocks."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=HEADER_DICTIONARY
        )

    def compress(self, headers: Headers) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._z.compress(bytes(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The peer's zlib stream for header blocks, with a bound on what it inflates to."""

    def __init__(self, max_block: int = MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._max = max_block

    def decompress(self, block: bytes) -> Headers:
        """Raises ProtocolError for bad zlib data, oversize blocks or malformed pairs."""
        try:
            raw = self._z.decompress(block, self._max + 1)
        except zlib.error as exc:
            raise ProtocolError(f"spdy: bad header compression: {exc}") from exc
        if len(raw) > self._max or self._z.unconsumed_tail:
            raise ProtocolError(f"spdy: header block inflates beyond {self._max} bytes")
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    """Raises ProtocolError."""
    view = memoryview(raw)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise ProtocolError("spdy: truncated header block")
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    def length() -> int:
        return int(struct.unpack(">I", take(4))[0])

    count = length()
    if count > MAX_HEADERS:
        raise ProtocolError(f"spdy: {count} headers in one block (limit {MAX_HEADERS})")
    headers: Headers = {}
    for _ in range(count):
        name_bytes = take(length())
        value_bytes = take(length())
        try:
            name, value = name_bytes.decode("ascii").lower(), value_bytes.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("spdy: header is not text") from exc
        if not name:
            raise ProtocolError("spdy: empty header name")
        headers[name] = f"{headers[name]}\0{value}" if name in headers else value
    if pos != len(view):
        raise ProtocolError("spdy: trailing bytes after the header block")
    return headers


def _control(kind: FrameType, flags: int, body: bytes) -> bytes:
    if len(body) > MAX_FRAME_BODY:
        raise ValueError("spdy frame body too large")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body


def encode_data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    if len(data) > MAX_FRAME_BODY:
        raise ValueError("spdy data frame too large")
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def encode(frame: Frame, compressor: HeaderCompressor) -> bytes:
    """One frame on the wire; header blocks go through ``compressor`` (stateful, in order)."""
    if isinstance(frame, DataFrame):
        return encode_data(frame.stream_id, frame.data, frame.fin)
    if isinstance(frame, SynStream):
        flags = (FLAG_FIN if frame.fin else 0) | (
            FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
        )
        head = struct.pack(
            ">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0
        )
        return _control(FrameType.SYN_STREAM, flags, head + compressor.compress(frame.headers))
    if isinstance(frame, SynReply | HeadersFrame):
        kind = FrameType.SYN_REPLY if isinstance(frame, SynReply) else FrameType.HEADERS
        body = struct.pack(">I", frame.stream_id) + compressor.compress(frame.headers)
        return _control(kind, FLAG_FIN if frame.fin else 0, body)
    if isinstance(frame, RstStream):
        return _control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
    if isinstance(frame, Settings):
        body = struct.pack(">I", len(frame.entries)) + b"".join(
            struct.pack(">II", (flags << 24) | ident, value)
            for flags, ident, value in frame.entries
        )
        return _control(FrameType.SETTINGS, 0, body)
    if isinstance(frame, Ping):
        return _control(FrameType.PING, 0, struct.pack(">I", frame.ping_id))
    if isinstance(frame, GoAway):
        body = struct.pack(">II", frame.last_good_stream_id, frame.status)
        return _control(FrameType.GOAWAY, 0, body)
    body = struct.pack(">II", frame.stream_id, frame.delta)
    return _control(FrameType.WINDOW_UPDATE, 0, body)


class FrameDecoder:
    """Cuts a byte stream into frames; feed bytes, then pull frames until None."""

    def __init__(
        self, decompressor: HeaderDecompressor | None = None, max_body: int = MAX_ACCEPTED_BODY
    ) -> None:
        self._buf = bytearray()
        self._headers = decompressor or HeaderDecompressor()
        self._max_body = max_body

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed.

        Unknown control frame types are skipped, as SPDY requires. Raises ProtocolError.
        """
        while True:
            if len(self._buf) < HEADER_BYTES:
                return None
            first, second = struct.unpack_from(">II", self._buf)
            flags, length = second >> 24, second & 0xFFFFFF
            if length > self._max_body:
                raise ProtocolError(f"spdy: frame of {length} bytes (limit {self._max_body})")
            if len(self._buf) < HEADER_BYTES + length:
                return None
            body = bytes(self._buf[HEADER_BYTES : HEADER_BYTES + length])
            del self._buf[: HEADER_BYTES + length]
            if not first & 0x80000000:
                return DataFrame(first & 0x7FFFFFFF, body, bool(flags & FLAG_FIN))
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise ProtocolError(f"spdy: version {version} frame (only 3 is spoken)")
            frame = self._control(kind, flags, body)
            if frame is not None:
                return frame

    def _control(self, kind: int, flags: int, body: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)

        def need(n: int) -> None:
            if len(body) < n:
                raise ProtocolError(f"spdy: short {FrameType(kind).name} frame")

        if kind == FrameType.SYN_STREAM:
            need(10)
            stream_id, assoc, pri = struct.unpack_from(">IIB", body)
            return SynStream(
                stream_id & 0x7FFFFFFF,
                self._headers.decompress(body[10:]),
                fin=fin,
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                associated_id=assoc & 0x7FFFFFFF,
                priority=pri >> 5,
            )
        if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
            need(4)
            stream_id = struct.unpack_from(">I", body)[0] & 0x7FFFFFFF
            headers = self._headers.decompress(body[4:])
            if kind == FrameType.SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return HeadersFrame(stream_id, headers, fin)
        if kind == FrameType.RST_STREAM:
            need(8)
            stream_id, status = struct.unpack_from(">II", body)
            return RstStream(stream_id & 0x7FFFFFFF, status)
        if kind == FrameType.SETTINGS:
            need(4)
            count = struct.unpack_from(">I", body)[0]
            if len(body) != 4 + 8 * count:
                raise ProtocolError("spdy: SETTINGS length does not match its entry count")
            entries = tuple(
                (word >> 24, word & 0xFFFFFF, value)
                for word, value in struct.iter_unpack(">II", body[4:])
            )
            return Settings(entries)
        if kind == FrameType.PING:
            need(4)
            return Ping(struct.unpack_from(">I", body)[0])
        if kind == FrameType.GOAWAY:
            need(4)
            last = struct.unpack_from(">I", body)[0] & 0x7FFFFFFF
            status = struct.unpack_from(">I", body, 4)[0] if len(body) >= 8 else 0
            return GoAway(last, status)
        if kind == FrameType.WINDOW_UPDATE:
            need(8)
            stream_id, delta = struct.unpack_from(">II", body)
            return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return None
