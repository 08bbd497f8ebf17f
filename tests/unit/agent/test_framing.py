from __future__ import annotations

import random

import pytest

from vmcri.agent.framing import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_BODY,
    Frame,
    FrameKind,
    FrameReader,
    encode_frame,
)
from vmcri.errors import InvalidArgument, ProtocolError


def test_round_trip_in_any_split() -> None:
    frames = [encode_frame(FrameKind.REQUEST, i, bytes([i]) * i) for i in range(1, 40)]
    stream = b"".join(frames)
    rng = random.Random(1)
    reader = FrameReader()
    got: list[Frame] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 50)
        reader.feed(stream[pos : pos + step])
        pos += step
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert [(f.frame_id, f.body) for f in got] == [(i, bytes([i]) * i) for i in range(1, 40)]
    assert reader.buffered == 0


def test_truncated_frame_waits_for_more() -> None:
    data = encode_frame(FrameKind.EVENT, 0, b"x" * 100)
    reader = FrameReader()
    reader.feed(data[:-1])
    assert reader.next_frame() is None
    reader.feed(data[-1:])
    assert reader.next_frame() == Frame(FrameKind.EVENT, 0, b"x" * 100)


def test_oversize_body_is_refused_on_both_ends() -> None:
    with pytest.raises(InvalidArgument):
        encode_frame(FrameKind.EVENT, 0, b"x" * (MAX_BODY + 1))
    reader = FrameReader()
    reader.feed(HEADER.pack(MAGIC, 1, int(FrameKind.EVENT), 0, 0, MAX_BODY + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.next_frame()


@pytest.mark.parametrize(
    "header",
    [
        HEADER.pack(b"XXXX", 1, 3, 0, 0, 0),
        HEADER.pack(MAGIC, 2, 3, 0, 0, 0),
        HEADER.pack(MAGIC, 1, 99, 0, 0, 0),
        HEADER.pack(MAGIC, 1, 3, 1, 0, 0),
    ],
)
def test_malformed_headers_are_protocol_errors(header: bytes) -> None:
    reader = FrameReader()
    reader.feed(header)
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_random_garbage_never_raises_anything_but_protocol_error() -> None:
    rng = random.Random(7)
    for _ in range(500):
        reader = FrameReader(max_body=4096)
        reader.feed(rng.randbytes(rng.randint(0, 200)))
        try:
            while reader.next_frame() is not None:
                pass
        except ProtocolError:
            pass
        assert reader.buffered <= 200


def test_scan_skips_stale_bytes_and_a_swallowing_header() -> None:
    wanted = encode_frame(FrameKind.HELLO_ACK, 0, b"right")
    stale = HEADER.pack(MAGIC, 1, int(FrameKind.HELLO_ACK), 0, 0, 5000)  # claims 5000 bytes
    reader = FrameReader()
    reader.feed(b"junk" * 10 + encode_frame(FrameKind.HELLO_ACK, 0, b"wrong") + stale + wanted)
    frame = reader.scan_for(FrameKind.HELLO_ACK, lambda f: f.body == b"right")
    assert frame is not None and frame.body == b"right"
    assert reader.buffered == 0


def test_scan_bounds_what_it_keeps() -> None:
    reader = FrameReader()
    for _ in range(100):
        reader.feed(b"\x00" * 10000)
        assert reader.scan_for(FrameKind.HELLO, lambda f: True) is None
        assert reader.buffered < HEADER_SIZE
    assert reader.discarded > 900000
