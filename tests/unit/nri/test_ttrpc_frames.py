"""ttrpc framing: the header's layout, and the 4 MiB bound in both directions."""

from __future__ import annotations

import struct

import pytest

from vmcri.errors import ProtocolError
from vmcri.nri.ttrpc_frames import MAX_BODY, Frame, FrameReader, encode


def test_header_is_length_stream_type_flags_big_endian() -> None:
    raw = encode(Frame(stream_id=3, type=1, flags=0, body=b"abc"))
    assert raw == struct.pack(">IIBB", 3, 3, 1, 0) + b"abc"


def test_frames_split_anywhere_come_out_whole() -> None:
    raw = encode(Frame(1, 1, 0, b"x" * 5000)) + encode(Frame(3, 2, 0, b""))
    reader = FrameReader()
    frames = []
    for i in range(0, len(raw), 7):
        frames += reader.feed(raw[i : i + 7])
    assert [(f.stream_id, f.type, len(f.body)) for f in frames] == [(1, 1, 5000), (3, 2, 0)]


def test_an_oversized_announcement_is_refused_before_its_body() -> None:
    with pytest.raises(ProtocolError, match="announced"):
        FrameReader().feed(struct.pack(">IIBB", MAX_BODY + 1, 1, 2, 0))


def test_we_never_send_over_the_bound() -> None:
    with pytest.raises(ProtocolError):
        encode(Frame(1, 1, 0, b"\0" * (MAX_BODY + 1)))
