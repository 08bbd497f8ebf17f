"""One checkpoint of a pod at a time.

A second CheckpointPod (or CheckpointContainer) of a pod while one runs is refused, not
queued: the VM handler's QEMU runs one migration at a time, and a failing second one
would cancel the first's (``migrate_cancel``) and resume a guest paused for its disk copy.
kubelet keeps its own in-flight guard per pod (KEP-5823), so a refusal only meets a
caller that asked twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vmcri.errors import FailedPrecondition


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: set[str] = set()

    @contextmanager
    def hold(self, sandbox_id: str) -> Iterator[None]:
        """Raises FailedPrecondition when a checkpoint of ``sandbox_id`` is running."""
        with self._lock:
            if sandbox_id in self._pods:
                raise FailedPrecondition(
                    f"pod sandbox {sandbox_id}: a checkpoint of it is in progress"
                )
            self._pods.add(sandbox_id)
        try:
            yield
        finally:
            with self._lock:
                self._pods.discard(sandbox_id)
