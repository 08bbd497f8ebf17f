"""Per-pod and node-wide counts of slow CRI calls in flight: admit or refuse at once.

Pure bookkeeping under one lock (no waiting: a call over a bound is refused, never
queued, so a refused call holds its server thread only for the refusal). WORK and
TEARDOWN each have a node-wide bound and a per-pod share; STREAM a node-wide bound.
POLL calls are not counted. :mod:`vmcri.cri.call_classes` says which call is which.
"""

from __future__ import annotations

import threading
from collections import Counter

from vmcri.config import CriConfig
from vmcri.cri.call_classes import Admit, CallClass
from vmcri.errors import ResourceExhausted


class CallShares:
    def __init__(self, limits: CriConfig) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._node: Counter[CallClass] = Counter()
        self._pods: Counter[tuple[CallClass, str]] = Counter()

    def enter(self, method: str, admit: Admit) -> None:
        """Count the call in; raises ResourceExhausted naming the pod and the bound."""
        kind = admit.kind
        if kind is CallClass.POLL:
            return
        limits = self.limits
        name = method.rsplit("/", 1)[-1]
        with self._lock:
            if kind is CallClass.STREAM:
                if self._node[kind] >= limits.max_event_streams:
                    raise ResourceExhausted(
                        f"{name}: {limits.max_event_streams} event streams are open "
                        "(cri.max_event_streams); retry later"
                    )
            else:
                if self._pods[kind, admit.pod] >= limits.max_slow_calls_per_pod:
                    raise ResourceExhausted(
                        f"{name}: {_who(admit.pod)} already has "
                        f"{limits.max_slow_calls_per_pod} {kind.value} calls in flight "
                        "(cri.max_slow_calls_per_pod); retry later"
                    )
                if self._node[kind] >= limits.max_slow_calls:
                    raise ResourceExhausted(
                        f"{name}: the node has {limits.max_slow_calls} {kind.value} calls in "
                        "flight (cri.max_slow_calls); retry later"
                    )
                self._pods[kind, admit.pod] += 1
            self._node[kind] += 1

    def leave(self, admit: Admit) -> None:
        kind = admit.kind
        if kind is CallClass.POLL:
            return
        with self._lock:
            self._node[kind] -= 1
            if kind is not CallClass.STREAM:
                key = (kind, admit.pod)
                self._pods[key] -= 1
                if self._pods[key] <= 0:
                    del self._pods[key]

    def in_flight(self, kind: CallClass, pod: str | None = None) -> int:
        """Calls of ``kind`` counted now, of ``pod`` or of the node (for tests and logs)."""
        with self._lock:
            return self._node[kind] if pod is None else self._pods[kind, pod]


def _who(pod: str) -> str:
    if pod.startswith("uid:"):
        return f"pod {pod.removeprefix('uid:')!r}"
    return "the node (calls naming no pod)" if pod == "node" else f"pod sandbox {pod}"
