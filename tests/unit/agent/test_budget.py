"""The per-pod byte budget for agent events (vmcri/agent/budget.py)."""

from __future__ import annotations

import threading
import time

import pytest

from vmcri.agent import budget, types
from vmcri.agent.budget import ByteBudget, event_cost


def test_charges_fit_up_to_the_capacity_and_release_gives_room_back() -> None:
    pot = ByteBudget(100)
    assert pot.try_acquire(60) and pot.try_acquire(40)
    assert not pot.try_acquire(1)
    pot.release(40)
    assert pot.try_acquire(30)
    assert (pot.used, pot.peak) == (90, 100)


def test_a_charge_larger_than_the_capacity_fails_at_once() -> None:
    pot = ByteBudget(100)
    started = time.monotonic()
    assert not pot.acquire(101, timeout=5.0)
    assert time.monotonic() - started < 1.0


def test_acquire_waits_for_a_release_and_gives_up_after_its_timeout() -> None:
    pot = ByteBudget(10)
    assert pot.try_acquire(10)
    started = time.monotonic()
    assert not pot.acquire(5, timeout=0.1)
    assert 0.1 <= time.monotonic() - started < 1.0
    threading.Timer(0.05, pot.release, args=(5,)).start()
    assert pot.acquire(5, timeout=5.0)
    assert pot.used == 10


def test_a_share_is_bounded_by_itself_and_by_the_whole() -> None:
    pot = ByteBudget(100)
    queue = pot.share(30)
    assert queue.try_acquire(30) and not queue.try_acquire(1)  # its own bound
    assert pot.used == 30
    assert pot.try_acquire(70) and not pot.try_acquire(1)
    queue.release(30)
    assert pot.used == 70 and queue.used == 0
    assert queue.try_acquire(30) and not queue.try_acquire(1)  # and the whole's
    pot.release(70)
    assert not queue.try_acquire(1) and pot.try_acquire(70)


def test_a_share_waiting_for_room_wakes_when_the_whole_frees_it() -> None:
    pot = ByteBudget(100)
    queue = pot.share(50)
    assert pot.try_acquire(100)
    threading.Timer(0.05, pot.release, args=(20,)).start()
    assert queue.acquire(20, timeout=5.0)


def test_every_event_costs_its_data_and_an_overhead() -> None:
    chunk = types.OutputChunk(1, "c", "", "stdout", b"x" * 100, False, 0, 0)
    assert event_cost(chunk) == budget.EVENT_OVERHEAD + 100
    assert event_cost(types.ContainerExit(2, "c", 0, False, 0)) == budget.EVENT_OVERHEAD
    data = types.PortForwardData(3, "pf", b"y" * 7, False, "")
    assert event_cost(data) == budget.EVENT_OVERHEAD + 7


def test_the_budget_bounds_the_count_of_empty_events_too() -> None:
    pot = ByteBudget(budget.POD_EVENT_BUDGET)
    exit_event = types.ContainerExit(1, "c", 0, False, 0)
    taken = 0
    while pot.try_acquire(event_cost(exit_event)):
        taken += 1
    assert taken == budget.POD_EVENT_BUDGET // budget.EVENT_OVERHEAD


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)
