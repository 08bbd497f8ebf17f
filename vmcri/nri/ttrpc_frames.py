"""ttrpc's framing (github.com/containerd/ttrpc channel.go), bounded.

A frame is a 10-byte header (4-byte big-endian body length, 4-byte stream id, 1-byte
message type, 1-byte flags) and the body. ttrpc refuses bodies over 4 MiB; so do we,
in both directions: a plugin that announces more is cut off before the body is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmcri.errors import ProtocolError

HEADER = struct.Struct(">IIBB")
HEADER_LEN = HEADER.size  # 10
MAX_BODY = 4 << 20
"""ttrpc's messageLengthMax: the largest body either side may send."""

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3  # streaming; NRI's unary calls never send it


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    body: bytes


def encode(frame: Frame) -> bytes:
    """Header and body; raises ProtocolError for a body over MAX_BODY."""
    if len(frame.body) > MAX_BODY:
        raise ProtocolError(f"ttrpc: a {len(frame.body)}-byte message is over {MAX_BODY}")
    return HEADER.pack(len(frame.body), frame.stream_id, frame.type, frame.flags) + frame.body


class FrameReader:
    """Cuts one logical connection's byte stream into frames.

    ``feed`` takes bytes as they arrive and returns the frames now complete. At most one
    frame (header and MAX_BODY) is ever buffered: a length over it raises ProtocolError
    at once, so a peer cannot make us hold more than that per connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER_LEN:
            length, stream_id, kind, flags = HEADER.unpack_from(self._buf)
            if length > MAX_BODY:
                raise ProtocolError(f"ttrpc: the peer announced a {length}-byte message")
            end = HEADER_LEN + length
            if len(self._buf) < end:
                break
            frames.append(Frame(stream_id, kind, flags, bytes(self._buf[HEADER_LEN:end])))
            del self._buf[:end]
        return frames
