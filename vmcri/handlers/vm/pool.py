"""A warm pool of restored, paused VMs per template shape: the bookkeeping and its refill.

A pool VM is a template clone restored ahead of any pod (``pool_vms.py`` makes, adopts and
destroys it) under a fresh sandbox ID: its domain, directories, sockets and cgroup are
those of the pod that will take it, so nothing is renamed when one does. RunPodSandbox
asks the backend for the new pod's ID (``SandboxBackend.new_sandbox_id``) and gets the ID
of an idle VM of the pod's shape, which it claims; ``run_sandbox`` of the record with that
ID then takes the VM over. Each VM's life here::

    making --made--> idle --claim--> claimed --take--> (the pod's: out of the pool)
                      |                 |
                      +--lost/stale--+--+--expired (no run_sandbox within CLAIM_TTL_S)
                                     v
                                  discarded (destroyed, nothing left)

One thread refills: at most one VM is made at a time, only while no RunPodSandbox of this
backend is in flight (``begin``/``end``), and each made VM's QEMU runs at the lowest CPU
priority until a pod takes it; it also discards idle VMs that died or whose shape's
template is no longer the current one. ``size`` VMs are kept per shape a pod has asked for
(the default shape from the start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vmcri.errors import VmcriError

log = logging.getLogger(__name__)

CLAIM_TTL_S = 120.0  # a claimed VM whose pod never ran (its RunPodSandbox failed first)
# A RunPodSandbox that got its ID but never reached run_sandbox (its name was taken, CNI
# failed) holds refills back this long at most.
START_TTL_S = 30.0
CHECK_INTERVAL_S = 5.0  # idle VMs are checked (alive, shape current) this often
RETRY_AFTER_S = 30.0  # after a failed make, before that shape is tried again
NOT_READY_RETRY_S = 2.0  # the shape's template is not there yet (being built)
QUIET_S = 2.0  # no refill starts until this long after the last RunPodSandbox ended (its
# first containers are being made then)


@dataclass(frozen=True)
class PoolVm:
    """An idle VM of the pool; ``pool_vms.py`` says what ``handle`` holds."""

    id: str  # the sandbox ID it was made under: its pod's
    shape: str  # its template's shape key
    memory_mib: int  # its RAM (idle: counted as a pod's)
    handle: object = None  # what the maker needs to adopt or destroy it


@dataclass
class _Entry:
    vm: PoolVm
    claimed_at: float = 0.0  # > 0: claimed by a RunPodSandbox


@dataclass
class _Shape:
    retry_at: float = 0.0  # after a failed make


@dataclass
class PoolHooks:
    """What the pool does to VMs (``pool_vms.py``; fakes in unit tests)."""

    make: Callable[[str], PoolVm]  # a new idle VM of a shape key; raises VmcriError
    destroy: Callable[[PoolVm], None]  # everything of it gone; must not raise
    usable: Callable[[PoolVm], bool]  # alive and of its shape's current template
    ready: Callable[[str], bool]  # a VM of the shape can be made now (its template exists)
    clock: Callable[[], float] = field(default=time.monotonic)


class VmPool:
    """The idle VMs of one backend, per shape; thread-safe."""

    def __init__(self, size: int, hooks: PoolHooks) -> None:
        self._size = size
        self._hooks = hooks
        self._entries: dict[str, _Entry] = {}
        self._shapes: dict[str, _Shape] = {}
        self._making = ""  # the shape being made (one at a time)
        self._starting: dict[str, float] = {}  # RunPodSandbox calls in flight, since
        self._quiet_from = 0.0
        self._stopped = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def stopped(self) -> bool:
        return self._stopped

    # ---- the pods' side -------------------------------------------------------------

    def want(self, shape: str) -> None:
        """Keep ``size`` idle VMs of ``shape`` from now on."""
        with self._changed:
            if shape not in self._shapes:
                self._shapes[shape] = _Shape()
                self._changed.notify_all()

    def forget(self, shape: str) -> None:
        """No more VMs of ``shape`` (replaced: a new guest image or QEMU); its idle ones go
        at the next check."""
        with self._changed:
            self._shapes.pop(shape, None)

    def claim(self, shape: str) -> str | None:
        """An idle VM of ``shape`` for a pod about to be made: its ID, or None."""
        with self._changed:
            if shape not in self._shapes:
                self._shapes[shape] = _Shape()
            for entry in self._entries.values():
                if entry.vm.shape == shape and not entry.claimed_at:
                    entry.claimed_at = self._hooks.clock()
                    self._changed.notify_all()
                    return entry.vm.id
        return None

    def take(self, sandbox_id: str) -> PoolVm | None:
        """The claimed VM of this pod, now out of the pool (the pod's); None: not one."""
        with self._changed:
            entry = self._entries.get(sandbox_id)
            if entry is None or not entry.claimed_at:
                return None
            del self._entries[sandbox_id]
            self._changed.notify_all()
            return entry.vm

    def begin(self, sandbox_id: str) -> None:
        """A RunPodSandbox has its ID: no refill begins until it ends (or START_TTL_S)."""
        with self._changed:
            self._starting[sandbox_id] = self._hooks.clock()

    def end(self, sandbox_id: str) -> None:
        """That RunPodSandbox is over (its VM up or not); refills may go on shortly."""
        with self._changed:
            if self._starting.pop(sandbox_id, None) is not None:
                self._quiet_from = self._hooks.clock() + QUIET_S
                self._changed.notify_all()

    def lost(self, sandbox_id: str) -> bool:
        """An idle VM's domain died: it is discarded (True), a refill follows."""
        with self._changed:
            entry = self._entries.pop(sandbox_id, None)
            self._changed.notify_all()
        if entry is None:
            return False
        log.warning("VM pool: VM %s died while idle, discarded", sandbox_id[:12])
        self._hooks.destroy(entry.vm)
        return True

    def idle(self) -> list[PoolVm]:
        """The VMs in the pool (claimed ones too, until their pod takes them)."""
        with self._changed:
            return [e.vm for e in self._entries.values()]

    # ---- the refill -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vm-pool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refilling and destroy every VM still in the pool (at the daemon's exit)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            self._hooks.destroy(entry.vm)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._stopped:
                    return
                self._changed.wait(timeout=self._wait_s())
                if self._stopped:
                    return
            try:
                self.step()
            except Exception:  # the refill must go on; a bug is logged with its trace
                log.exception("VM pool: refill step failed")

    def _wait_s(self) -> float:
        return CHECK_INTERVAL_S if self._next_shape() is None else 0.05

    def step(self) -> bool:
        """Check the pool and make at most one VM; True when one was made."""
        self._sweep()
        with self._changed:
            shape = self._next_shape()
            if shape is None:
                return False
            self._making = shape
        if not self._hooks.ready(shape):
            with self._changed:
                self._making = ""
                if shape in self._shapes:  # (the hook may have replaced it)
                    self._shapes[shape].retry_at = self._hooks.clock() + NOT_READY_RETRY_S
            return False
        try:
            vm = self._hooks.make(shape)
        except VmcriError as exc:
            log.warning("VM pool: cannot make a VM of shape %s: %s", shape[:12], exc.message)
            with self._changed:
                self._making = ""
                if shape not in self._shapes:
                    return False
                self._shapes[shape].retry_at = self._hooks.clock() + RETRY_AFTER_S
            return False
        with self._changed:
            self._making = ""
            if self._stopped:
                keep = False
            else:
                self._entries[vm.id] = _Entry(vm)
                keep = True
        if not keep:
            self._hooks.destroy(vm)
        return keep

    def _next_shape(self) -> str | None:
        """The shape to make a VM of now, or None (full, busy, or waiting to retry)."""
        now = self._hooks.clock()
        if self._size <= 0 or self._making or self._starting or now < self._quiet_from:
            return None
        for shape, state in self._shapes.items():
            have = sum(1 for e in self._entries.values() if e.vm.shape == shape)
            if have < self._size and now >= state.retry_at:
                return shape
        return None

    def _sweep(self) -> None:
        """Discard idle VMs that died or went stale, and claims no pod took in time."""
        now = self._hooks.clock()
        with self._changed:
            entries = list(self._entries.values())
            for sandbox_id, began in list(self._starting.items()):
                if now - began > START_TTL_S:  # its RunPodSandbox failed before run_sandbox
                    del self._starting[sandbox_id]
        gone: list[PoolVm] = []
        for entry in entries:
            expired = entry.claimed_at and now - entry.claimed_at > CLAIM_TTL_S
            if expired or (not entry.claimed_at and not self._hooks.usable(entry.vm)):
                with self._changed:
                    current = self._entries.get(entry.vm.id)
                    if current is entry and (expired or not entry.claimed_at):
                        del self._entries[entry.vm.id]
                        gone.append(entry.vm)
        for vm in gone:
            log.info("VM pool: discarding VM %s (dead, stale or unclaimed)", vm.id[:12])
            self._hooks.destroy(vm)
