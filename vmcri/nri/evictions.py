"""Containers plugins ask to evict, stopped off the asking thread, their reason kept.

A plugin asks in a CreateContainer or UpdateContainer answer, or unsolicited through
UpdateContainers. Evicting means what it means in containerd's NRI adaptation: the
container is stopped at once (StopContainer with no grace period, so SIGKILL) and stays
there for kubelet to see and act on by its restart policy; here its status then says why:
reason ``Evicted`` and a message naming the plugin and quoting (bounded, printable) the
reason it gave.

The stop never runs on the thread that asked: a plugin's UpdateContainers may arrive while
the plugin is itself answering an event (a CreateContainer waiting on it), and a stop may
wait for an exit up to the kill grace. One worker takes the requests in order; each stop is
bounded (:data:`EVICT_BOUND_S`), the queue is bounded (:data:`MAX_QUEUED`, a request over
it is refused in the log), a container already queued is not queued again, and an ID that
names no container, or one already ended, is not queued. No CRI call waits on the worker,
so a slow eviction delays only the evictions behind it.

The reason is written into the record after the exit is folded, inside the store's update,
and only if the container was still running when the eviction began; until then (a short
window) ContainerStatus shows the exit's own reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vmcri.api import nri_pb2
from vmcri.errors import VmcriError
from vmcri.store.records import ContainerRecord, ContainerState
from vmcri.store.store import Store

log = logging.getLogger(__name__)

Stopper = Callable[[str, float], None]
"""Stops a container at once: its ID and a ``time.monotonic()`` deadline; raises VmcriError."""

EVICT_BOUND_S = 30.0
"""How long one eviction's stop may take (SIGKILL and the exit, a VM's under emulation)."""
MAX_QUEUED = 256
"""Evictions waiting at once; one over it is refused (logged), not queued."""
MAX_REASON = 512
"""Characters of a plugin's reason kept in the container's message."""
EVICTED = "Evicted"
"""The container's CRI reason after an eviction."""


@dataclass(frozen=True)
class Eviction:
    container_id: str
    plugin: str
    reason: str

    @property
    def message(self) -> str:
        return f"evicted by NRI plugin {self.plugin}: {self.reason}"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_REASON])


class Evictions:
    def __init__(self, store: Store, stopper: Stopper) -> None:
        self._store = store
        self._stopper = stopper
        self._queue: queue.Queue[Eviction | None] = queue.Queue(MAX_QUEUED)
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # container IDs queued or being stopped
        self._worker = threading.Thread(target=self._run, name="nri-evictions", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._queue.put(None)

    def request(
        self,
        plugin: str,
        evictions: Iterable[nri_pb2.ContainerEviction],
        creating: str = "",
    ) -> None:
        """Queue each eviction ``plugin`` asked for; never waits. ``creating`` is the ID of
        a container being created, not one yet: its eviction is refused (the plugin may
        refuse the creation instead), as containerd finds no such container."""
        for asked in evictions:
            cid = asked.container_id
            if cid == creating:
                log.error(
                    "NRI plugin %s: asks to evict container %s while it is being created; "
                    "not a container yet (refuse CreateContainer instead)",
                    plugin,
                    cid[:64],
                )
                continue
            try:
                # By its whole ID only: the store's prefix lookup is for people, not plugins.
                record = self._store.containers.find(cid) if cid else None
            except VmcriError:
                record = None  # an ambiguous prefix
            if record is None or record.id != cid or record.state is ContainerState.EXITED:
                log.info("NRI plugin %s: evicts %r, not a running container", plugin, cid[:64])
                continue
            eviction = Eviction(record.id, plugin, _printable(asked.reason))
            with self._lock:
                if record.id in self._pending:
                    continue
                try:
                    self._queue.put_nowait(eviction)
                except queue.Full:
                    log.error(
                        "NRI plugin %s: %d evictions queued; eviction of %s refused",
                        plugin,
                        MAX_QUEUED,
                        record.id,
                    )
                    continue
                self._pending.add(record.id)
            log.warning(
                "NRI plugin %s: evicts container %s: %s", plugin, record.id, eviction.reason
            )

    def _run(self) -> None:
        while True:
            eviction = self._queue.get()
            if eviction is None:
                return
            try:
                self._evict(eviction)
            except Exception:
                log.exception("NRI: eviction of container %s failed", eviction.container_id)
            finally:
                with self._lock:
                    self._pending.discard(eviction.container_id)

    def _evict(self, eviction: Eviction) -> None:
        record = self._store.containers.find(eviction.container_id)
        if record is None or record.state is ContainerState.EXITED:
            return  # ended or removed while queued: nothing to evict
        try:
            self._stopper(record.id, time.monotonic() + EVICT_BOUND_S)
        except VmcriError as exc:
            log.error("NRI: eviction of container %s: stop failed: %s", record.id, exc.message)
            return

        def evicted(current: ContainerRecord) -> ContainerRecord:
            if current.state is not ContainerState.EXITED or current.reason == EVICTED:
                return current
            return dataclasses.replace(current, reason=EVICTED, message=eviction.message)

        with contextlib.suppress(VmcriError):  # removed right after its stop: nobody to tell
            self._store.containers.update(record.id, evicted)
