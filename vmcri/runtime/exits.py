"""Container exits, folded into the records: the one place a container becomes EXITED.

An exit reaches the runtime once, as an event that carries it (code, reason, time): the
pod's supervisor sends it up when the agent reports the container's end or the agent's
home dies (:meth:`ContainerExits.container_exited`), StartContainer folds a start that
failed, and a restarted daemon reads back the exits kept on disk once. Each is decided
inside the store's one update, so of two accounts (an exit event and a StopContainer
finding the pod gone) only the first changes the record and publishes STOPPED; every
fold wakes whoever waits for an exit (StopContainer, StopPodSandbox).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from vmcri.errors import NotFound
from vmcri.runtime.events import ContainerEvent, EventBus, EventType
from vmcri.store.records import ContainerRecord, ContainerState
from vmcri.store.store import Store
from vmcri.supervisor.api import ContainerExit

log = logging.getLogger(__name__)


class ContainerExits:
    def __init__(
        self,
        store: Store,
        events: EventBus,
        clock: Callable[[], int],
        stopped: Callable[[ContainerRecord], None] = lambda container: None,
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock
        self._stopped = stopped  # told of each container that became EXITED (NRI)
        self._changed = threading.Condition()
        self._folds = 0

    def fold(self, container_id: str, exit: ContainerExit) -> ContainerRecord:
        """The container is EXITED as ``exit`` says, unless it is already; raises NotFound.

        A reason left empty is the CRI's for the code: "Completed" for 0, else "Error".
        """
        reason = exit.reason or ("Completed" if exit.exit_code == 0 else "Error")
        before: list[ContainerState] = []

        def exited(record: ContainerRecord) -> ContainerRecord:
            if record.state is ContainerState.EXITED:
                return record
            before.append(record.state)
            return dataclasses.replace(
                record,
                state=ContainerState.EXITED,
                exit_code=exit.exit_code,
                finished_at=exit.finished_at,
                reason=reason,
                message=exit.message,
            )

        try:
            container = self._store.containers.update(container_id, exited)
        finally:
            self._wake()
        if before and (before[0] is not ContainerState.CREATED or container.started_at):
            self._events.publish(
                ContainerEvent(container.id, container.sandbox_id, EventType.STOPPED, self._clock())
            )
        if before:
            self._stopped(container)
        return container

    def container_exited(self, container_id: str, exit: ContainerExit) -> None:
        """The supervisor's report (``ContainerRecords.container_exited``), on its thread: a
        failure is logged there, never raised into the agent's event dispatcher."""
        try:
            self.fold(container_id, exit)
        except NotFound:
            pass  # removed meanwhile: nothing to fold into
        except Exception:
            log.exception("container %s: folding its exit failed", container_id)

    def folds(self) -> int:
        """A counter of folds, to wait for the next one with :meth:`wait_next`."""
        with self._changed:
            return self._folds

    def wait_next(self, seen: int, timeout_s: float) -> None:
        """Return once a fold after ``seen`` (a :meth:`folds` value) happened, or after
        ``timeout_s``."""
        with self._changed:
            if self._folds == seen:
                self._changed.wait(timeout_s)

    def _wake(self) -> None:
        with self._changed:
            self._folds += 1
            self._changed.notify_all()
