"""Token store, status JSON and terminal size parsing."""

from __future__ import annotations

import json

import pytest

from vmcri.errors import ResourceExhausted
from vmcri.streaming import kstatus
from vmcri.streaming.remotecommand import Outcome, parse_sizes
from vmcri.streaming.tokens import TokenStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_single_use_random_and_url_safe() -> None:
    store: TokenStore[str] = TokenStore()
    a, b = store.issue("a"), store.issue("b")
    assert a != b and len(a) >= 24 and all(c.isalnum() or c in "-_" for c in a)
    assert store.consume(a) == "a"
    assert store.consume(a) is None
    assert store.consume("unknown") is None
    assert store.consume(b) == "b"


def test_peeking_uses_no_token_and_sees_no_expired_one() -> None:
    clock = Clock()
    store: TokenStore[str] = TokenStore(ttl_s=60, clock=clock)
    token = store.issue("x")
    assert store.peek(token) == "x"
    assert store.peek(token) == "x"
    assert store.consume(token) == "x"
    assert store.peek(token) is None
    late = store.issue("y")
    clock.now += 61
    assert store.peek(late) is None


def test_tokens_expire() -> None:
    clock = Clock()
    store: TokenStore[str] = TokenStore(ttl_s=60, clock=clock)
    token = store.issue("x")
    clock.now += 61
    assert store.consume(token) is None


def test_store_is_bounded_and_expiry_frees_room() -> None:
    clock = Clock()
    store: TokenStore[int] = TokenStore(ttl_s=10, capacity=2, clock=clock)
    store.issue(1)
    store.issue(2)
    with pytest.raises(ResourceExhausted):
        store.issue(3)
    clock.now += 11
    assert len(store) == 0
    store.issue(3)


def test_status_json_matches_kubelet() -> None:
    assert kstatus.success() == b'{"metadata":{},"status":"Success"}'
    failure = json.loads(kstatus.exit_failure(42, ["sh", "-c", "exit 42"]))
    assert failure == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: "
        "error executing command [sh -c exit 42], exit code 42",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
    }
    internal = json.loads(kstatus.internal_error("boom"))
    assert internal["reason"] == "InternalError" and internal["code"] == 500


def test_outcome_picks_the_status() -> None:
    assert Outcome(0).status_json(["x"]) == kstatus.success()
    assert b"NonZeroExitCode" in Outcome(2).status_json(["x"])
    assert b"InternalError" in Outcome(error="e").status_json(["x"])
    assert Outcome(0).status_text(["x"]) == b""


def test_sizes_are_parsed_across_chunks_and_garbage_is_dropped() -> None:
    buffer = bytearray(b'{"Width":80,"Height":24}{"Width":1')
    assert list(parse_sizes(buffer)) == [(80, 24)]
    buffer += b'00,"Height":50} "junk" {"Width":"x","Height":1}'
    assert list(parse_sizes(buffer)) == [(100, 50)]
    assert buffer == bytearray()
    buffer = bytearray(b"\xff\xfe")
    assert list(parse_sizes(buffer)) == [] and buffer == bytearray()
