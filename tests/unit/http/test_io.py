"""The request head parser: bounded, fed in pieces, strict about syntax."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.http.io import MAX_HEAD, HeadBuffer

HEAD = b"GET /exec/tok?port=80&port=81 HTTP/1.1\r\nHost: x\r\nConnection: a, Upgrade\r\n\r\n"


def test_a_head_fed_byte_by_byte_parses_once_complete() -> None:
    buf = HeadBuffer()
    data = HEAD + b"\x80\x03rest"
    results = [buf.feed(data[i : i + 1]) for i in range(len(HEAD))]
    assert all(r is None for r in results[:-1])
    request = results[-1]
    assert request is not None
    assert (request.method, request.path) == ("GET", "/exec/tok")
    assert request.query == {"port": ["80", "81"]}
    assert request.header_tokens("connection") == ["a", "Upgrade"]
    assert request.rest == b""
    whole = HeadBuffer().feed(data)
    assert whole is not None and whole.rest == b"\x80\x03rest"


def test_oversize_head_is_refused_before_it_ends() -> None:
    buf = HeadBuffer()
    buf.feed(b"GET / HTTP/1.1\r\nX: ")
    with pytest.raises(InvalidArgument, match=f"over {MAX_HEAD} bytes"):
        for _ in range(MAX_HEAD):
            buf.feed(b"a")


def test_head_of_exactly_the_limit_is_accepted() -> None:
    line = b"GET / HTTP/1.1\r\nX: "
    head = line + b"a" * (MAX_HEAD - len(line))
    assert HeadBuffer().feed(head + b"\r\n\r\n") is not None
    with pytest.raises(InvalidArgument):
        HeadBuffer().feed(head + b"a\r\n\r\n")


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET /\r\n\r\n", "malformed request line"),
        (b"GET / SPDY/3\r\n\r\n", "unsupported HTTP version"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed header line"),
        (b"GET / HTTP/1.1\r\n X: y\r\n\r\n", "malformed header line"),
    ],
)
def test_malformed_heads_name_what_is_wrong(head: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        HeadBuffer().feed(head)
