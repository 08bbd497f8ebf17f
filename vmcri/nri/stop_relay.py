"""Container exits told to plugins (StopContainer) off the thread that noticed them.

An exit is folded by whichever thread saw it (an agent event, the reaper, a
StopContainer call); none of them may wait for plugins. They queue the record here and
one worker tells the plugins, in order. Events that must come after a stop
(RemoveContainer, RemovePodSandbox) first :meth:`drain` the stops queued so far, bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from vmcri.store.records import ContainerRecord

log = logging.getLogger(__name__)

MAX_QUEUED = 1024


class StopRelay:
    def __init__(self, deliver: Callable[[ContainerRecord], None]) -> None:
        self._deliver = deliver
        self._queue: queue.Queue[ContainerRecord | None] = queue.Queue(MAX_QUEUED)
        self._done = threading.Condition()
        self._queued = 0  # stops queued so far, and of them delivered (under _done)
        self._delivered = 0
        self._worker = threading.Thread(target=self._run, name="nri-stops", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    def push(self, record: ContainerRecord) -> None:
        try:
            with self._done:
                self._queue.put_nowait(record)
                self._queued += 1
        except queue.Full:
            log.error("NRI: %d container stops queued; plugins miss %s's", MAX_QUEUED, record.id)

    def drain(self, bound_s: float) -> None:
        """Wait (at most ``bound_s``) until the stops queued so far are delivered."""
        if not self._worker.is_alive():
            return
        with self._done:
            target = self._queued
            self._done.wait_for(lambda: self._delivered >= target, bound_s)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                self._deliver(record)
            except Exception:
                log.exception("NRI: StopContainer of %s failed", record.id)
            finally:
                with self._done:
                    self._delivered += 1
                    self._done.notify_all()
