"""The admission rules as plain data: who is dropped when, and what counts as one peer."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.http.admission import AdmissionLimits, PendingPool, peer_key

LIMITS = AdmissionLimits(head_timeout_s=2.0, max_pending=4, max_pending_per_peer=2)


def test_a_peer_over_its_share_loses_its_oldest_pending_connection() -> None:
    pool: PendingPool[str] = PendingPool(LIMITS)
    assert pool.add("a1", "A", 0.0) == []
    assert pool.add("b1", "B", 0.1) == []
    assert pool.add("a2", "A", 0.2) == []
    assert pool.add("a3", "A", 0.3) == ["a1"]  # A's oldest, not B's
    assert pool.count("A") == 2 and pool.count("B") == 1


def test_a_full_pool_drops_the_oldest_connection_of_all() -> None:
    pool: PendingPool[str] = PendingPool(LIMITS)
    for i, peer in enumerate("ABCD"):
        pool.add(peer, peer, float(i))
    assert pool.add("E", "E", 9.0) == ["A"]
    assert len(pool) == 4


def test_expiry_follows_age_and_counts_from_accept() -> None:
    pool: PendingPool[str] = PendingPool(LIMITS)
    pool.add("x", "A", 0.0)
    pool.add("y", "B", 1.0)
    assert pool.next_deadline() == 2.0
    assert pool.expired(1.9) == []
    assert pool.expired(2.5) == ["x"]
    pool.remove("x")
    pool.remove("x")  # twice is harmless
    assert pool.expired(3.0) == ["y"]
    pool.remove("y")
    assert pool.next_deadline() is None and pool.count("A") == 0


def test_peer_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert peer_key("127.0.0.1") == "127.0.0.1"
    assert peer_key("2001:db8:1:2::5") == peer_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::5") != peer_key("2001:db8:1:2::5")
    assert peer_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert peer_key("fe80::1%eth0") == "fe80::/64"


def test_limits_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="max_pending_per_peer"):
        AdmissionLimits(max_pending=2, max_pending_per_peer=3)
    with pytest.raises(InvalidArgument, match="head_timeout_s"):
        AdmissionLimits(head_timeout_s=0)
