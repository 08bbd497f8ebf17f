"""The reaper's per-pod isolation (vmcri/runtime/pod_checks.py)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.wait import wait_for
from vmcri.runtime.pod_checks import PodChecks


def test_a_hung_pod_delays_neither_the_round_nor_the_other_pods() -> None:
    checks = PodChecks()
    release = threading.Event()
    done: list[str] = []
    started = time.monotonic()

    def hung() -> None:
        release.wait(10)

    skipped = checks.run({"hung": hung, "ok": lambda: done.append("ok")}, wait_s=0.2)
    assert time.monotonic() - started < 1.0
    assert done == ["ok"] and skipped == set()
    assert checks.busy() == {"hung"}
    release.set()


def test_a_pod_whose_previous_check_still_runs_is_skipped_not_waited_for() -> None:
    checks = PodChecks()
    release = threading.Event()
    runs: list[str] = []

    def hung() -> None:
        runs.append("hung")
        release.wait(10)

    checks.run({"hung": hung}, wait_s=0.0)
    started = time.monotonic()
    skipped = checks.run({"hung": hung, "ok": lambda: runs.append("ok")}, wait_s=1.0)
    assert skipped == {"hung"}
    assert runs == ["hung", "ok"]  # the hung pod's check did not start a second time
    assert time.monotonic() - started < 0.9  # the round waited only for what it started
    release.set()
    wait_for(lambda: checks.busy() == set(), 5, "the released check to finish")
    assert checks.run({"hung": lambda: runs.append("again")}, wait_s=1.0) == set()
    assert runs[-1] == "again"


def test_a_failing_check_is_logged_and_frees_its_pod(caplog: pytest.LogCaptureFixture) -> None:
    checks = PodChecks()

    def broken() -> None:
        raise RuntimeError("guest said no")

    assert checks.run({"pod": broken}, wait_s=1.0) == set()
    assert checks.busy() == set()
    assert "liveness check failed" in caplog.text
