"""Waiting on a condition, never on the clock: the tests' one polling loop.

A test that sleeps and then looks is either slow or flaky (the machine is shared and
TCG is slow); a test that polls what it waits for is neither::

    wait_for(lambda: "tick 1" in log(), 60, "the first ticks")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.02


def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(INTERVAL_S)
    return bool(predicate())


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "the condition") -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(INTERVAL_S)
