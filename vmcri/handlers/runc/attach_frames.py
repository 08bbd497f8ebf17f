"""The framing on a runc container's attach socket (monitor <-> daemon).

The monitor listens on ``attach.sock`` in the container's state directory; each
daemon-side attach session is one connection. Both directions carry frames::

    +--------+----------------------+-----------------+
    | kind:1 | length: 4, big-endian| payload: length |
    +--------+----------------------+-----------------+

daemon -> monitor: STDIN (bytes for the container), STDIN_EOF (this client's
stdin ended; the monitor closes the container's stdin only for ``stdin_once``),
RESIZE (rows, cols as two big-endian u16).
monitor -> daemon: STDOUT / STDERR (container output, after the CRI log got
it), EXIT (the container's output ended; the monitor closes the connection).

A frame format of our own rather than conmon's: it only has to be shared by two
programs of this package, and a length prefix keeps stdin EOF and resizes apart
from data without any escaping.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

STDIN = 0
STDOUT = 1
STDERR = 2
EXIT = 3
STDIN_EOF = 4
RESIZE = 5

KINDS = frozenset((STDIN, STDOUT, STDERR, EXIT, STDIN_EOF, RESIZE))
HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20  # larger frames mean a broken or hostile peer
SOCKET_NAME = "attach.sock"
CONSOLE_SOCKET_NAME = "console.sock"


class FrameError(ValueError):
    """The peer sent something that is not a frame of this protocol."""


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes = b""


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame. Raises FrameError for an unknown kind or an oversized payload."""
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def encode_resize(rows: int, cols: int) -> bytes:
    """A RESIZE frame; sizes are clamped to what a u16 (and a winsize) holds."""
    return encode(RESIZE, struct.pack(">HH", max(0, min(rows, 0xFFFF)), max(0, min(cols, 0xFFFF))))


def decode_resize(payload: bytes) -> tuple[int, int]:
    """(rows, cols). Raises FrameError if the payload is not two u16."""
    if len(payload) != 4:
        raise FrameError(f"resize payload of {len(payload)} bytes, want 4")
    rows, cols = struct.unpack(">HH", payload)
    return int(rows), int(cols)


def chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut to payload-sized pieces (nothing for empty data)."""
    for start in range(0, len(data), MAX_PAYLOAD):
        yield data[start : start + MAX_PAYLOAD]


class Decoder:
    """Incremental decoder: feed bytes as they arrive, take whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data``. Raises FrameError on a malformed header."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buffer)
            if kind not in KINDS or length > MAX_PAYLOAD:
                raise FrameError(f"bad frame header (kind {kind}, length {length})")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(kind, bytes(self._buffer[HEADER.size : end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)
