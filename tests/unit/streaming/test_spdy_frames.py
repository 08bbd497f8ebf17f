"""SPDY/3.1 framing and the zlib header blocks."""

from __future__ import annotations

import struct
import zlib

import pytest

from vmcri.errors import ProtocolError
from vmcri.streaming import spdy_frames as sf
from vmcri.streaming.spdy_dictionary import DICTIONARY_ADLER32, HEADER_DICTIONARY


def roundtrip(*frames: sf.Frame) -> list[sf.Frame]:
    compressor = sf.HeaderCompressor()
    decoder = sf.FrameDecoder()
    decoder.feed(b"".join(sf.encode(f, compressor) for f in frames))
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(HEADER_DICTIONARY) == 1423
    assert zlib.adler32(HEADER_DICTIONARY) == DICTIONARY_ADLER32
    assert HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options")


def test_every_frame_type_roundtrips() -> None:
    frames: list[sf.Frame] = [
        sf.SynStream(1, {"streamtype": "error"}, fin=False, priority=3),
        sf.SynStream(3, {"streamtype": "data", "port": "80"}, fin=True, unidirectional=True),
        sf.SynReply(1),
        sf.HeadersFrame(1, {"x": "y"}, fin=True),
        sf.DataFrame(1, b"payload", fin=False),
        sf.DataFrame(3, b"", fin=True),
        sf.RstStream(5, sf.RstStatus.CANCEL),
        sf.Settings(((0, 7, 65536), (1, 4, 100))),
        sf.Ping(7),
        sf.GoAway(9, 0),
        sf.WindowUpdate(1, 4096),
    ]
    assert roundtrip(*frames) == frames


def test_header_context_spans_frames_and_values_with_nul_are_kept() -> None:
    headers = {"streamtype": "stdout", "multi": "a\0b"}
    first, second = roundtrip(sf.SynStream(1, headers), sf.SynStream(3, headers))
    assert first == sf.SynStream(1, headers) and second == sf.SynStream(3, headers)


def test_header_block_from_an_independent_zlib_stream_decodes() -> None:
    """What another implementation (Go's framer) sends: zlib primed with the dictionary."""
    raw = struct.pack(">I", 2)
    for name, value in (("streamtype", "error"), ("X-Upper", "v")):
        raw += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value))
        raw += value.encode()
    z = zlib.compressobj(zdict=HEADER_DICTIONARY)
    block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
    assert sf.HeaderDecompressor().decompress(block) == {"streamtype": "error", "x-upper": "v"}


def test_wrong_dictionary_is_a_protocol_error() -> None:
    z = zlib.compressobj(zdict=b"not the spdy dictionary")
    block = z.compress(struct.pack(">I", 0)) + z.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(ProtocolError):
        sf.HeaderDecompressor().decompress(block)


def test_header_bomb_is_refused() -> None:
    raw = struct.pack(">I", 1) + struct.pack(">I", 5) + b"large" + struct.pack(">I", 200_000)
    raw += b"a" * 200_000
    z = zlib.compressobj(zdict=HEADER_DICTIONARY)
    block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(block) < 2000
    with pytest.raises(ProtocolError, match="inflates"):
        sf.HeaderDecompressor().decompress(block)


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">I", 1) + struct.pack(">I", 10) + b"short",  # truncated
        struct.pack(">I", 100),  # too many headers
        struct.pack(">I", 0) + b"trailing",
        struct.pack(">II", 1, 0) + struct.pack(">I", 0),  # empty name
    ],
)
def test_malformed_header_blocks(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        sf.parse_header_block(raw)


def test_frames_arrive_in_pieces() -> None:
    wire = sf.encode(sf.DataFrame(1, b"abcdef", fin=True), sf.HeaderCompressor())
    decoder = sf.FrameDecoder()
    for byte in wire[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(wire[-1:])
    assert decoder.next_frame() == sf.DataFrame(1, b"abcdef", fin=True)


def test_oversize_frame_and_wrong_version_are_refused() -> None:
    decoder = sf.FrameDecoder(max_body=16)
    decoder.feed(struct.pack(">II", 1, 17) + b"x" * 17)
    with pytest.raises(ProtocolError, match="limit"):
        decoder.next_frame()
    decoder = sf.FrameDecoder()
    decoder.feed(struct.pack(">HHI", 0x8000 | 2, 6, 4) + b"\0\0\0\1")
    with pytest.raises(ProtocolError, match="version"):
        decoder.next_frame()


def test_unknown_control_frames_are_skipped() -> None:
    decoder = sf.FrameDecoder()
    decoder.feed(struct.pack(">HHI", 0x8000 | 3, 10, 2) + b"zz")
    decoder.feed(sf.encode(sf.Ping(3), sf.HeaderCompressor()))
    assert decoder.next_frame() == sf.Ping(3)


def test_short_control_frame_is_refused() -> None:
    decoder = sf.FrameDecoder()
    decoder.feed(struct.pack(">HHI", 0x8000 | 3, sf.FrameType.RST_STREAM, 4) + b"\0\0\0\1")
    with pytest.raises(ProtocolError, match="short"):
        decoder.next_frame()


def test_wire_layout_of_a_data_frame() -> None:
    assert sf.encode_data(5, b"hi", fin=True) == b"\x00\x00\x00\x05\x01\x00\x00\x02hi"
