"""Per-pod shares of streaming sessions under the node-wide bound."""

from __future__ import annotations

import pytest

from vmcri.streaming.shares import SessionShares


def test_a_pod_over_its_share_is_refused_naming_the_limit_and_others_are_not() -> None:
    shares = SessionShares(max_sessions=5, max_per_pod=2)
    assert shares.take("a") is None
    assert shares.take("a") is None
    refusal = shares.take("a")
    assert refusal is not None
    assert "pod sandbox a" in refusal and "limit 2 per pod" in refusal
    assert shares.take("b") is None
    assert shares.of("a") == 2 and len(shares) == 3
    shares.give_back("a")
    assert shares.take("a") is None


def test_the_node_bound_holds_over_all_pods() -> None:
    shares = SessionShares(max_sessions=3, max_per_pod=2)
    for pod in ("a", "a", "b"):
        assert shares.take(pod) is None
    refusal = shares.take("c")
    assert refusal == "too many streaming sessions (limit 3)"


def test_a_share_above_the_bound_is_the_bound() -> None:
    assert SessionShares(max_sessions=4, max_per_pod=16).max_per_pod == 4
    with pytest.raises(ValueError):
        SessionShares(max_sessions=4, max_per_pod=0)
