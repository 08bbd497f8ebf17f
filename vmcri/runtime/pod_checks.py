"""The reaper's per-pod isolation: one pod's checks never wait on another pod.

A container's liveness check may call into its pod's guest agent, and the guest is
hostile: it can answer slowly or not at all (each agent call is bounded, but a pod
with many containers times many call timeouts is long). So the reaper runs each
sandbox's checks on a thread of its own and never starts a sandbox's next round while
its previous one still runs::

    reaper round      sandbox A: previous round still running -> skipped, logged
                      sandbox B: start thread, check B's containers in order
                      sandbox C: start thread, ...
                      wait up to ``wait_s`` for the threads started, then return

Why threads per round and not a fixed pool: a pool of N workers is stalled by N hung
pods, and a pool sized to the number of pods is this, with more parts. At most one
thread per sandbox exists, and only while it checks; a round costs one short-lived
thread per pod with live containers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class PodChecks:
    def __init__(self, name: str = "reaper") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._busy: dict[str, list[float]] = {}  # sandbox id -> [started at, rounds skipped]

    def busy(self) -> set[str]:
        """Sandboxes whose check is still running."""
        with self._lock:
            return set(self._busy)

    def run(self, checks: Mapping[str, Callable[[], None]], wait_s: float) -> set[str]:
        """Start each sandbox's check unless its previous one still runs.

        Waits up to ``wait_s`` seconds for the checks started (those that take longer go
        on in the background). A check's exceptions are logged, never raised. Returns the
        sandboxes skipped because their previous check was still running.
        """
        skipped: set[str] = set()
        started: list[threading.Thread] = []
        now = time.monotonic()
        for sandbox_id, check in checks.items():
            with self._lock:
                entry = self._busy.get(sandbox_id)
                if entry is None:
                    self._busy[sandbox_id] = [now, 0]
                else:
                    entry[1] += 1
            if entry is not None:
                skipped.add(sandbox_id)
                if entry[1] % 60 == 1:  # once a minute of reaper rounds, not every round
                    log.warning(
                        "sandbox %s: its previous liveness check has run for %.0fs; skipped",
                        sandbox_id,
                        now - entry[0],
                    )
                continue
            thread = threading.Thread(
                target=self._run_one,
                args=(sandbox_id, check),
                name=f"{self._name}-{sandbox_id[:12]}",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: try again next round
                log.exception("sandbox %s: cannot start its liveness check", sandbox_id)
                with self._lock:
                    self._busy.pop(sandbox_id, None)
                continue
            started.append(thread)
        deadline = time.monotonic() + wait_s
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        return skipped

    def _run_one(self, sandbox_id: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception:
            log.exception("sandbox %s: liveness check failed", sandbox_id)
        finally:
            with self._lock:
                self._busy.pop(sandbox_id, None)
