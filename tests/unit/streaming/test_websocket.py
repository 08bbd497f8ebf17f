"""RFC 6455 framing, the handshake key and the message connection."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from vmcri.errors import ProtocolError
from vmcri.streaming import websocket as ws


def test_accept_key_matches_rfc_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ws.valid_client_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not ws.valid_client_key("not base64!")
    assert not ws.valid_client_key("c2hvcnQ=")  # 5 bytes, not 16


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
def test_masked_frames_roundtrip_every_length_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    decoder = ws.FrameDecoder()
    decoder.feed(ws.encode_frame(ws.Opcode.BINARY, payload, mask=True))
    assert decoder.next_frame() == ws.WsFrame(True, ws.Opcode.BINARY, payload)


def test_server_frames_are_unmasked() -> None:
    assert ws.encode_frame(ws.Opcode.BINARY, b"\x01hi") == b"\x82\x03\x01hi"


@pytest.mark.parametrize(
    "frame, message",
    [
        (ws.encode_frame(ws.Opcode.BINARY, b"x"), "masking"),  # client frame not masked
        (bytes([0x82 | 0x40, 0x80]) + b"\0\0\0\0", "reserved"),
        (bytes([0x83, 0x80]) + b"\0\0\0\0", "opcode"),
        (bytes([0x09, 0x80]) + b"\0\0\0\0", "control"),  # fragmented ping
        (bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40), "limit"),
    ],
)
def test_bad_frames_are_protocol_errors(frame: bytes, message: str) -> None:
    decoder = ws.FrameDecoder()
    decoder.feed(frame)
    with pytest.raises(ProtocolError, match=message):
        decoder.next_frame()


def test_connection_reassembles_fragments_answers_ping_and_echoes_close() -> None:
    server_sock, client_sock = socket.socketpair()
    conn = ws.WebSocketConnection(server_sock, idle_timeout=5.0)
    client_sock.sendall(
        ws.encode_frame(ws.Opcode.BINARY, b"\x00hel", fin=False, mask=True)
        + ws.encode_frame(ws.Opcode.PING, b"p", mask=True)
        + ws.encode_frame(ws.Opcode.CONTINUATION, b"lo", mask=True)
        + ws.encode_frame(ws.Opcode.CLOSE, struct.pack(">H", 1000), mask=True)
    )
    assert conn.receive() == (ws.Opcode.BINARY, b"\x00hello")
    with pytest.raises(ws.WebSocketClosed):
        conn.receive()
    decoder = ws.FrameDecoder(expect_masked=False)
    client_sock.settimeout(5)
    decoder.feed(client_sock.recv(100))
    assert decoder.next_frame() == ws.WsFrame(True, ws.Opcode.PONG, b"p")
    close = decoder.next_frame()
    assert close is not None and close.opcode == ws.Opcode.CLOSE
    server_sock.close()
    client_sock.close()


def test_message_over_the_limit_closes_with_1009() -> None:
    server_sock, client_sock = socket.socketpair()
    conn = ws.WebSocketConnection(server_sock, idle_timeout=5.0, max_message=10)
    sender = threading.Thread(
        target=client_sock.sendall,
        args=(
            ws.encode_frame(ws.Opcode.BINARY, b"123456", fin=False, mask=True)
            + ws.encode_frame(ws.Opcode.CONTINUATION, b"789012", mask=True),
        ),
    )
    sender.start()
    with pytest.raises(ProtocolError):
        conn.receive()
    sender.join()
    client_sock.settimeout(5)
    data = client_sock.recv(100)
    assert data[:2] == b"\x88\x02" and struct.unpack(">H", data[2:4])[0] == ws.CLOSE_TOO_BIG
