"""Growing a running pod VM: vCPUs through libvirt, memory through virtio-mem, onlined
by the guest's agent; on any failure the VM is put back as it was.

    set_vcpus(new)  ->  plug_memory(new - boot)  ->  agent OnlineResources(new vCPUs)
         |                     |                           |
         +---------------------+-------- a failure: unplug what was added, raise

Under TCG the vCPUs are present from boot (``domain.plugs_vcpus``): the first step is
skipped and the agent onlines them.

What to grow to is sizing.py's decision; this module only carries it out. The guest decides
whether it takes what is offered (an untrusted guest may refuse: it only starves itself),
so each step is checked: the memory QEMU reports plugged, the CPUs the agent reports
online. A VM that did not take it answers RESOURCE_EXHAUSTED and is left at its old size.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from vmcri.agent.types import GuestResources
from vmcri.errors import ResourceExhausted, VmcriError
from vmcri.handlers.vm.domain import VIRTIO_MEM_ID
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.sizing import MIB, VmSize

log = logging.getLogger(__name__)

# Held around each vCPU hotplug: the pod's QEMU where libvirt can move the new vCPU
# thread, and back in the pod's cgroup afterwards (cgroup.py).
HotplugGuard = Callable[[], AbstractContextManager[None]]
PLUG_TIMEOUT_S = 60.0  # the guest plugs and onlines memory (TCG: ~1 s per GiB here)
ONLINE_TIMEOUT_S = 30.0  # a hotplugged vCPU appears in the guest and comes online


class Guest(Protocol):
    """The guest's side of a growth (``AgentClient``)."""

    def online_resources(self, cpus: int, wait_s: float) -> GuestResources: ...


def grow(
    hypervisor: Hypervisor,
    guest: Guest,
    name: str,
    size: VmSize,
    target: VmSize,
    *,
    plug_vcpus: bool = True,
    hotplug_guard: HotplugGuard = contextlib.nullcontext,
) -> None:
    """Grow the running domain ``name`` from ``size`` to ``target`` (both from sizing.py);
    ``plug_vcpus`` False: its vCPUs are all present, the guest only onlines them;
    ``hotplug_guard`` is held around each call that plugs or unplugs vCPUs.

    Raises ResourceExhausted (the guest did not take the vCPUs or the memory in time),
    HypervisorError (libvirt or QEMU refused), the agent's errors; the VM is then back at
    ``size``, as far as the guest gives back what it took (it does for vCPUs it has not
    onlined and memory nothing uses yet).
    """
    cpus_added = memory_added = False
    started = time.monotonic()
    try:
        if target.vcpus > size.vcpus and plug_vcpus:
            cpus_added = True
            with hotplug_guard():
                hypervisor.set_vcpus(name, target.vcpus)
        if target.memory_mib > size.memory_mib:
            memory_added = True
            wanted = target.plugged_mib * MIB
            plugged = hypervisor.plug_memory(name, VIRTIO_MEM_ID, wanted, PLUG_TIMEOUT_S)
            if plugged < wanted:
                raise ResourceExhausted(
                    f"the pod VM took {plugged // MIB} of {wanted // MIB} MiB of hotplugged "
                    f"memory within {PLUG_TIMEOUT_S:.0f} s"
                )
        online = guest.online_resources(target.vcpus, ONLINE_TIMEOUT_S)
        if online.online_cpus < target.vcpus:
            raise ResourceExhausted(
                f"the pod VM onlined {online.online_cpus} of {target.vcpus} vCPUs "
                f"within {ONLINE_TIMEOUT_S:.0f} s"
            )
    except BaseException:
        _undo(hypervisor, name, size, cpus_added, memory_added, hotplug_guard)
        raise
    log.info(
        "VM %s grew from %s to %s in %.2f s (guest MemTotal %d MiB)",
        name,
        size.label(),
        target.label(),
        time.monotonic() - started,
        online.memory_total_bytes // MIB,
        extra={"grow_s": round(time.monotonic() - started, 3)},
    )


def _undo(
    hypervisor: Hypervisor,
    name: str,
    size: VmSize,
    cpus: bool,
    memory: bool,
    hotplug_guard: HotplugGuard,
) -> None:
    """Best effort: the record keeps ``size``, so what the guest keeps is merely unused."""
    if memory:
        try:
            hypervisor.plug_memory(name, VIRTIO_MEM_ID, size.plugged_mib * MIB, PLUG_TIMEOUT_S)
        except VmcriError as exc:
            log.warning("VM %s: cannot take back the memory offered: %s", name, exc.message)
    if cpus:
        try:
            with hotplug_guard():
                hypervisor.set_vcpus(name, size.vcpus)
        except VmcriError as exc:
            log.warning("VM %s: cannot take back the vCPUs offered: %s", name, exc.message)


class PodLocks:
    """One lock per pod: its growths one at a time (each reads the size the last one left),
    and a pod whose guest is slow to answer delays no other pod's."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, sandbox_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(sandbox_id, threading.Lock())
        with lock:
            yield

    def forget(self, sandbox_id: str) -> None:
        with self._guard:
            self._locks.pop(sandbox_id, None)
