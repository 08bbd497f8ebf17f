"""Streaming sessions per pod: a node-wide bound, and a share no one pod can exceed.

Every session is a thread, so the server bounds them node-wide (``max_sessions``); a
per-pod share keeps one tenant's port-forwards or execs from taking all of them and
turning another tenant's exec away with 503. The pod is known before the session
starts: every token names its pod sandbox (see ``vmcri.streaming.requests``).
Bookkeeping only: a slot is taken or refused at once, never waited for.
"""

from __future__ import annotations

import threading
from collections import Counter


class SessionShares:
    def __init__(self, max_sessions: int, max_per_pod: int) -> None:
        if max_per_pod < 1 or max_sessions < 1:
            raise ValueError("max_sessions and max_per_pod must be at least 1")
        self.max_sessions = max_sessions
        self.max_per_pod = min(max_per_pod, max_sessions)  # a share above the bound is none
        self._lock = threading.Lock()
        self._total = 0
        self._pods: Counter[str] = Counter()

    def take(self, pod: str) -> str | None:
        """Take a slot for ``pod``; None when taken, else why not (the 503's message)."""
        with self._lock:
            if self._pods[pod] >= self.max_per_pod:
                return (
                    f"too many streaming sessions for pod sandbox {pod} "
                    f"(limit {self.max_per_pod} per pod, streaming.max_sessions_per_pod)"
                )
            if self._total >= self.max_sessions:
                return f"too many streaming sessions (limit {self.max_sessions})"
            self._pods[pod] += 1
            self._total += 1
            return None

    def give_back(self, pod: str) -> None:
        with self._lock:
            self._total -= 1
            self._pods[pod] -= 1
            if self._pods[pod] <= 0:
                del self._pods[pod]

    def of(self, pod: str) -> int:
        with self._lock:
            return self._pods[pod]

    def __len__(self) -> int:
        with self._lock:
            return self._total
