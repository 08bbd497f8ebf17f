"""How big a pod VM is and how far it may grow: the sizing policy, in one place.

A VM holds what its pod's limits need together, plus the guest's own share::

    memory = overhead_memory_mib + (the pod-level memory limit, else the containers' sum)
    vCPUs  = overhead_vcpus + ceil(the pod-level CPU limit, else the containers' sum)

never less than the largest single container limit needs. The pod-level numbers are
``PodSandboxConfig.linux.resources`` as kubelet sends them (the sum of its containers'
limits, or the pod's own with PodLevelResources, which caps them together as the pod
cgroup does on a node); kubelet's ``overhead`` is not added (ARCHITECTURE.md, "VM
sizing"). Without any memory limit a VM boots with ``default_memory_mib``.

A running VM grows, never shrinks: vCPUs up to its declared maximum (hotplug), memory up
to its boot RAM plus a virtio-mem region. A limit beyond that is refused with
InvalidArgument naming the request's field, before anything changes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.options import VmOptions
from vmcri.host.meminfo import host_memory_bytes
from vmcri.model import Resources
from vmcri.store.records import SandboxRecord

log = logging.getLogger(__name__)

MIB = 1024 * 1024
POD_RESOURCES = "config.linux.resources"
# QEMU's most vCPUs for the q35 and microvm machines (7.2: 288). More vCPUs than host
# CPUs is allowed at boot: Kubernetes admits CPU limits above a node's count.
MAX_VCPUS = 288
DEFAULT_MAX_VCPUS = 8  # options.max_vcpus = 0: limits of this many CPUs, or the host's
MEMORY_BLOCK_MIB = 128  # the guest adds hotplugged memory in blocks of this size (x86-64)
PLUG_GRANULE_MIB = 2  # virtio-mem's block size on x86-64 (a transparent huge page)


@dataclass(frozen=True)
class Demand:
    """What a pod's limits need together: bytes of memory and CPUs (0: no limit)."""

    memory_bytes: int
    cpus: float


def _cpus(r: Resources) -> float:
    return r.cpu_quota / r.cpu_period if r.cpu_quota > 0 and r.cpu_period > 0 else 0.0


def pod_demand(pod: Resources, containers: Sequence[Resources]) -> Demand:
    """The pod-level limit where kubelet sent one, else the containers' sum; at least the
    largest single container limit (each resource on its own)."""
    memories = [c.memory_limit_in_bytes for c in containers]
    cpus = [_cpus(c) for c in containers]
    memory = pod.memory_limit_in_bytes or sum(memories)
    cpu = _cpus(pod) or sum(cpus)
    return Demand(max([memory, *memories]), max([cpu, *cpus]))


def needed(demand: Demand, options: VmOptions) -> tuple[int, int]:
    """Memory (MiB) and vCPUs a VM needs for ``demand``; 0 MiB when no memory is limited."""
    memory_mib = math.ceil(demand.memory_bytes / MIB)
    vcpus = math.ceil(demand.cpus) if demand.cpus else 0
    return (
        memory_mib + options.overhead_memory_mib if memory_mib else 0,
        max(1, vcpus + options.overhead_vcpus),
    )


def host_memory_mib() -> int:
    """This host's MemTotal, in MiB."""
    return host_memory_bytes() // MIB


def size_vm(
    container_limits: list[Resources],
    pod_limits: Resources,
    options: VmOptions,
    host_memory: int | None = None,
) -> tuple[int, int]:
    """Memory (MiB) and vCPUs a VM boots with: the limits' need plus the overhead.

    Without any memory limit ``default_memory_mib`` applies. Raises InvalidArgument naming
    the pod's resource field when the VM would need more memory than ``host_memory`` (MiB;
    this host's MemTotal by default) or more vCPUs than QEMU takes: the start would fail
    inside libvirt or QEMU, after work was done, with an error that names no field.
    """
    memory_mib, total_vcpus = needed(pod_demand(pod_limits, container_limits), options)
    total_mib = memory_mib or options.default_memory_mib + options.overhead_memory_mib
    limit_mib = host_memory_mib() if host_memory is None else host_memory
    if total_mib > limit_mib:
        raise InvalidArgument(
            f"{POD_RESOURCES}.memory_limit_in_bytes: the VM would need {total_mib} MiB "
            f"(with {options.overhead_memory_mib} MiB overhead), the host has {limit_mib} MiB"
        )
    if total_vcpus > MAX_VCPUS:
        raise InvalidArgument(
            f"{POD_RESOURCES}.cpu_quota: the VM would need {total_vcpus} vCPUs "
            f"(with {options.overhead_vcpus} overhead), QEMU takes at most {MAX_VCPUS}"
        )
    return total_mib, total_vcpus


@dataclass(frozen=True)
class VmSize:
    """A pod VM's size now and the most it can grow to (kept in ``SandboxRecord.runtime``)."""

    memory_mib: int  # now: the boot RAM plus the virtio-mem memory plugged since
    vcpus: int  # online now
    boot_memory_mib: int  # RAM at boot (the domain's <memory>)
    max_memory_mib: int  # the boot RAM plus the virtio-mem region
    max_vcpus: int  # the domain's maximum (<vcpu current=...>MAX</vcpu>)

    @property
    def plugged_mib(self) -> int:
        """Memory plugged into the virtio-mem region."""
        return self.memory_mib - self.boot_memory_mib

    @property
    def hotplug_memory_mib(self) -> int:
        """The virtio-mem region's size (0: the VM has none)."""
        return self.max_memory_mib - self.boot_memory_mib

    def label(self) -> str:
        return f"{self.memory_mib} MiB/{self.vcpus} vCPU"

    def runtime(self) -> dict[str, str]:
        return {
            "memory_mib": str(self.memory_mib),
            "vcpus": str(self.vcpus),
            "boot_memory_mib": str(self.boot_memory_mib),
            "max_memory_mib": str(self.max_memory_mib),
            "max_vcpus": str(self.max_vcpus),
        }

    @staticmethod
    def from_runtime(runtime: Mapping[str, str]) -> VmSize | None:
        """The size a record keeps; a record from before VMs could grow cannot (its
        maximum is its size). None for a record that keeps no size at all."""
        try:
            memory, vcpus = int(runtime["memory_mib"]), int(runtime["vcpus"])
            return VmSize(
                memory_mib=memory,
                vcpus=vcpus,
                boot_memory_mib=int(runtime.get("boot_memory_mib", memory)),
                max_memory_mib=int(runtime.get("max_memory_mib", memory)),
                max_vcpus=int(runtime.get("max_vcpus", vcpus)),
            )
        except (KeyError, ValueError):
            return None


def boot_size(
    memory_mib: int,
    vcpus: int,
    options: VmOptions,
    host_memory: int | None = None,
    host_cpus: int | None = None,
    hotplug_vcpus: bool = True,
    pod_memory_limit: bool = False,
) -> VmSize:
    """A VM booted with ``memory_mib`` and ``vcpus``, and the most it may grow to.

    vCPUs up to ``options.max_vcpus`` (0: CPU limits of the host's CPUs, at most 8, plus
    the guest's ``overhead_vcpus``, as a pod-level limit that large boots; without
    ``hotplug_vcpus``, software emulation, 0 means none beyond the boot count: spare vCPUs
    would be present from boot there, which a guest can bring online itself and which
    cost every container creation ~0.25 s of per-CPU kernel set-up); memory up to
    ``options.max_memory_mib`` (0: the host's MemTotal), never beyond the host's MemTotal,
    in whole guest memory blocks; with ``pod_memory_limit`` (kubelet sent one, and the VM
    boots at it) not at all. The virtio-mem region is exactly the room to grow: a guest
    that unloads its driver can make QEMU back all of it (ARCHITECTURE.md, "VM sizing"),
    so it is never larger than the pod may ever use. A VM that boots larger keeps its
    boot size as maximum.
    A ``microvm`` machine hotplugs nothing (no ACPI hotplug, no PCI for virtio-mem).
    """
    if options.machine == "microvm":
        return VmSize(memory_mib, vcpus, memory_mib, memory_mib, vcpus)
    cpus = host_cpus if host_cpus is not None else os.cpu_count() or 1
    default = min(cpus, DEFAULT_MAX_VCPUS) + options.overhead_vcpus if hotplug_vcpus else vcpus
    max_vcpus = min(MAX_VCPUS, options.max_vcpus or default)
    host = host_memory_mib() if host_memory is None else host_memory
    limit = memory_mib if pod_memory_limit else min(options.max_memory_mib or host, host)
    region = max(0, limit - memory_mib) // MEMORY_BLOCK_MIB * MEMORY_BLOCK_MIB
    return VmSize(
        memory_mib=memory_mib,
        vcpus=vcpus,
        boot_memory_mib=memory_mib,
        max_memory_mib=memory_mib + region,
        max_vcpus=max(vcpus, max_vcpus),
    )


def plan_growth(
    size: VmSize, demand: Demand, options: VmOptions, field: str, hotplug_vcpus: bool = True
) -> VmSize:
    """The size the VM must grow to for ``demand`` (``size`` itself when it fits).

    Never smaller than now; memory grows in virtio-mem blocks. Raises InvalidArgument naming
    ``field`` (the request's resources, e.g. ``config.linux.resources``) when the VM
    cannot grow that far.
    """
    memory_mib, vcpus = needed(demand, options)
    if vcpus > size.max_vcpus:
        # The guest's own vCPU is wanted, not needed: a VM that cannot grow further still
        # honours every CPU limit it has the vCPUs for (0.5 CPU in a 1-vCPU VM).
        vcpus = max(size.max_vcpus, size.vcpus)
        if math.ceil(demand.cpus) > vcpus:
            raise InvalidArgument(
                f"{field}.cpu_quota: the pod's CPU limits need {math.ceil(demand.cpus)} "
                f"vCPUs, more than its VM can have: {vcpus} "
                f"({_why_max(options, 'max_vcpus', hotplug_vcpus)})"
            )
    if memory_mib > size.max_memory_mib:
        raise InvalidArgument(
            f"{field}.memory_limit_in_bytes: the pod's memory limits need a VM of "
            f"{memory_mib} MiB (with {options.overhead_memory_mib} MiB for the guest), more "
            f"than it can have: {size.max_memory_mib} MiB "
            f"({_why_max(options, 'max_memory_mib')})"
        )
    target_memory = size.memory_mib
    if memory_mib > size.memory_mib:
        plug = memory_mib - size.boot_memory_mib
        plug = math.ceil(plug / PLUG_GRANULE_MIB) * PLUG_GRANULE_MIB
        target_memory = min(size.boot_memory_mib + plug, size.max_memory_mib)
    return VmSize(
        memory_mib=target_memory,
        vcpus=max(size.vcpus, vcpus),
        boot_memory_mib=size.boot_memory_mib,
        max_memory_mib=size.max_memory_mib,
        max_vcpus=size.max_vcpus,
    )


def _why_max(options: VmOptions, key: str, hotplug_vcpus: bool = True) -> str:
    if options.machine == "microvm":
        return "a microvm machine cannot grow"
    if key == "max_memory_mib":
        return (
            "the pod-level memory limit it was started with, else options.max_memory_mib, "
            "at most the host's MemTotal"
        )
    if not hotplug_vcpus and not options.max_vcpus:
        return (
            "vCPUs are not hotplugged under software emulation; options.max_vcpus boots "
            "VMs with spare ones"
        )
    return "options.max_vcpus"


def check_overhead(sandbox: SandboxRecord, options: VmOptions) -> None:
    """kubelet's overhead (the RuntimeClass's podFixed) is what the node sets aside for the
    pod beyond its containers: the guest's own share and QEMU. It does not size the VM
    (ARCHITECTURE.md, "VM sizing"); one that is smaller than the guest's share alone means
    the node counts less than the pod uses, which is worth a warning."""
    overhead = sandbox.config.overhead
    if 0 < overhead.memory_limit_in_bytes < options.overhead_memory_mib * (1 << 20):
        log.warning(
            "sandbox %s: the pod overhead kubelet sent (%d MiB, the RuntimeClass's "
            "podFixed) is less than the VM's own %d MiB (overhead_memory_mib), before QEMU's",
            sandbox.id,
            overhead.memory_limit_in_bytes >> 20,
            options.overhead_memory_mib,
        )
