"""NRI's multiplexer: chunks per connection, bounded chunks, and a peer that stops reading."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.support.wait import wait_for
from vmcri.nri.mux import MAX_CHUNK, WRITE_CHUNK, Mux


def _pair(timeout: float = 5.0) -> tuple[Mux, socket.socket]:
    ours, theirs = socket.socketpair()
    return Mux(ours, "test", timeout), theirs


def test_chunks_reach_their_connection_in_order_and_unknown_ones_are_dropped() -> None:
    mux, peer = _pair()
    got: list[bytes] = []
    mux.open(2, got.append)
    mux.start()
    peer.sendall(struct.pack(">II", 2, 3) + b"abc" + struct.pack(">II", 9, 1) + b"z")
    peer.sendall(struct.pack(">II", 2, 2) + b"de")
    wait_for(lambda: len(got) == 2, 5, "two chunks")
    assert got == [b"abc", b"de"]
    mux.close("done")


def test_writes_are_cut_into_chunks_nri_can_read() -> None:
    mux, peer = _pair()
    mux.send(1, b"y" * (WRITE_CHUNK + 10))
    head = peer.recv(8)
    assert struct.unpack(">II", head) == (1, WRITE_CHUNK)
    mux.close("done")


def test_an_oversized_chunk_ends_the_connection_naming_why() -> None:
    mux, peer = _pair()
    reasons: list[str] = []
    mux.on_close.append(reasons.append)
    mux.start()
    peer.sendall(struct.pack(">II", 1, MAX_CHUNK + 1))
    wait_for(lambda: reasons, 5, "the close")
    assert "chunk" in reasons[0]
    assert peer.recv(1) == b""  # it hung up


def test_a_peer_that_stops_reading_is_cut_off_within_the_write_timeout() -> None:
    mux, peer = _pair(timeout=0.5)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with pytest.raises(ConnectionError, match="stopped reading"):
        mux.send(1, b"\0" * (8 << 20))
    assert mux.closed
    assert "stopped reading" in mux.close_reason
    peer.close()
