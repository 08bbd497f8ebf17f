"""Where a pod VM's host processes run, remembered per pod across growths and restarts.

``VmPlacement`` is the part of ``VmBackend`` (backend.py) that keeps each pod's
``Placement`` (``cgroup.py`` makes the cgroups and moves the processes): QEMU placed
before its guest runs, placed again once per daemon run, back in libvirt's group while a
vCPU is plugged, and the cgroups removed after the VM. See ARCHITECTURE.md, "Where a VM
pod's processes run".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from vmcri.errors import VmcriError
from vmcri.handlers.vm.cgroup import Placement, PodCgroups
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.grow import HotplugGuard
from vmcri.handlers.vm.hypervisor import Hypervisor, wait_until
from vmcri.store.records import SandboxRecord

log = logging.getLogger(__name__)


class VmPlacement:
    """The pods' cgroups; a part of ``VmBackend``, which sets what is declared here."""

    _hypervisor: Hypervisor
    _cgroups: PodCgroups
    # Each pod's cgroups from its start on (the record has them once it is READY),
    # and the pods this daemon run has placed (again, after a restart) already.
    _placements: dict[str, Placement]
    _placed: set[str]

    def _placer(self, sandbox_id: str) -> Callable[[int], None]:
        """Moves a starting VM's processes into the pod's cgroup, before the guest runs."""

        def place(qemu_pid: int) -> None:
            placement = self._placements[sandbox_id]
            name = domain_name(sandbox_id)
            self._placements[sandbox_id] = self._cgroups.place(placement, qemu_pid, name)
            self._placed.add(sandbox_id)

        return place

    def _reconcile_cgroups(self, sandbox: SandboxRecord) -> None:
        """Once per daemon run: a VM that runs (a restart found it) is placed again, in
        case a growth ended with its threads where libvirt put them."""
        placement = Placement.from_runtime(sandbox.runtime)
        self._placed.add(sandbox.id)
        if placement is None:
            return  # a pod from before VM pods had cgroups
        name = domain_name(sandbox.id)
        try:
            placed = self._cgroups.place(placement, self._hypervisor.qemu_pid(name), name)
        except VmcriError as exc:
            log.warning("sandbox %s: cannot place its VM in %s: %s", sandbox.id, placement.leaf,
                        exc.message)  # fmt: skip
            return
        self._placements[sandbox.id] = placed

    def _hotplug_guard(self, sandbox: SandboxRecord) -> HotplugGuard:
        """QEMU in libvirt's cgroup2 group while libvirt plugs a vCPU, then placed again."""
        placement = self._placements.get(sandbox.id) or Placement.from_runtime(sandbox.runtime)
        if placement is None:
            return contextlib.nullcontext
        name = domain_name(sandbox.id)

        def guard() -> contextlib.AbstractContextManager[None]:
            return self._cgroups.hotplug(placement, self._hypervisor.qemu_pid(name), name)

        return guard

    def _remove_cgroups(self, sandbox_id: str, sandbox: SandboxRecord | None) -> None:
        """After the VM is gone: its leaf, and the pod's cgroup if vmcri made it. libvirt
        ends QEMU and virtiofsd before destroy returns; their exit may take a moment."""
        placement = self._placements.pop(sandbox_id, None)
        self._placed.discard(sandbox_id)
        if placement is None and sandbox is not None:
            placement = Placement.from_runtime(sandbox.runtime)
        if placement is not None and not wait_until(
            lambda: self._cgroups.remove(placement), 5.0, 0.05
        ):
            log.warning("sandbox %s: cgroup %s is still in use", sandbox_id, placement.leaf)
