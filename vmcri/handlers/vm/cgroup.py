"""Where a VM pod's host processes run: a leaf of the pod's cgroup, in every hierarchy.

libvirt puts each QEMU in a cgroup of its own making (``/machine/qemu-N-<name>.libvirt-
qemu``, with ``emulator`` and ``vcpuN`` children for cpu and cpuset), whatever the pod's
``cgroup_parent`` says, and its ``<resource><partition>`` cannot name kubelet's cgroup
(libvirt appends ``.partition`` to each component). So after libvirt made the domain,
and before the guest runs (a cold boot starts paused, a restore has not loaded its
state), the backend moves QEMU and every other process libvirt put in the domain's cgroup
(virtiofsd) into ``<pod cgroup>/vmcri-<sandbox id>``: through ``cgroup.procs``, which
moves a process with all its threads, in every hierarchy. The guest's RAM is charged
from then on (charges do not move with a process: this kernel refuses
``memory.move_charge_at_immigrate``, and v2 never had it).

libvirt moves threads again on two occasions, both handled here:

* a vCPU hotplug: libvirt writes the new thread into its ``vcpuN`` cgroup. On v1 that
  succeeds and takes the thread out of the pod's cgroup; on cgroup2 it fails with
  EOPNOTSUPP (a thread cannot leave its process's threaded domain) and so does the
  hotplug. :meth:`VmCgroups.hotplug` hands QEMU back to libvirt's cgroup2 group for the
  call and places everything again afterwards (v1 too).
* a daemon restart finds VMs as they were; :meth:`VmCgroups.place` runs again once per
  daemon run for each pod (``sandbox_alive``), and is idempotent.

The v1 ``devices`` hierarchy is joined only where libvirt set no device list for QEMU
(QEMU at its root there, as on these hosts): moving it would drop libvirt's device ACL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from vmcri.errors import HostCommandError
from vmcri.handlers.vm.options import VmOptions
from vmcri.host import cgroups
from vmcri.host.cgroups import CGROUP_ROOT, Hierarchy, PodCgroup
from vmcri.store.records import SandboxRecord

log = logging.getLogger(__name__)

MIB = 1024 * 1024
LEAF_PREFIX = "vmcri-"  # <pod cgroup>/vmcri-<sandbox id>, as the runc handler's containers
# libvirt's per-thread children of a domain's cgroup.
_LIBVIRT_CHILD = re.compile(r"/(emulator|vcpu\d+|iothread\d+)$")
CONFINING = ("devices",)  # v1 hierarchies joined only where libvirt confines nothing


@dataclass(frozen=True)
class Placement:
    """A VM pod's cgroups (kept in ``SandboxRecord.runtime``)."""

    pod: str  # the pod's cgroup
    leaf: str  # where its host processes run
    made_pod: bool  # vmcri made the pod cgroup: it removes it with the pod
    libvirt_v2: str = ""  # QEMU's cgroup2 group as libvirt made it (vCPU hotplug goes there)

    def runtime(self) -> dict[str, str]:
        return {
            "cgroup": self.leaf,
            "cgroup_pod": self.pod,
            "cgroup_pod_made": "1" if self.made_pod else "0",
            "cgroup_libvirt_v2": self.libvirt_v2,
        }

    @staticmethod
    def from_runtime(runtime: dict[str, str]) -> Placement | None:
        if not runtime.get("cgroup") or not runtime.get("cgroup_pod"):
            return None
        return Placement(
            pod=runtime["cgroup_pod"],
            leaf=runtime["cgroup"],
            made_pod=runtime.get("cgroup_pod_made") == "1",
            libvirt_v2=runtime.get("cgroup_libvirt_v2", ""),
        )


class PodCgroups(Protocol):
    """The seam the backend uses (a fake in unit tests: ``tests/support/cgroups.py``)."""

    def prepare(self, sandbox: SandboxRecord, max_memory_mib: int) -> Placement: ...

    def place(self, placement: Placement, qemu_pid: int, domain: str) -> Placement: ...

    def hotplug(
        self, placement: Placement, qemu_pid: int, domain: str
    ) -> contextlib.AbstractContextManager[None]: ...

    def weigh(self, placement: Placement, least: bool) -> None: ...

    def remove(self, placement: Placement) -> bool: ...


class VmCgroups:
    """The cgroup side of a VM pod: make, fill, hand to libvirt for a hotplug, remove."""

    def __init__(self, driver: str, options: VmOptions, root: str = CGROUP_ROOT) -> None:
        self._driver = driver
        self._options = options
        self._root = root

    def pod_cgroup(self, sandbox: SandboxRecord) -> PodCgroup:
        """Raises InvalidArgument naming ``config.linux.cgroup_parent``."""
        return cgroups.pod_cgroup(
            sandbox.config.cgroup_parent, self._driver, self._options.cgroup_parent, sandbox.id
        )

    def prepare(self, sandbox: SandboxRecord, max_memory_mib: int) -> Placement:
        """Make the pod's cgroup where kubelet has not, and the VM's leaf in it. A pod
        cgroup vmcri makes is limited to the VM's most memory plus QEMU's allowance; one
        kubelet made keeps kubelet's limit. Raises InvalidArgument, HostCommandError."""
        pod = self.pod_cgroup(sandbox)
        leaf = f"{pod.path.rstrip('/')}/{LEAF_PREFIX}{sandbox.id}"
        # kubelet's if it exists in any hierarchy (vmcri then neither limits nor removes it)
        existed = any(os.path.isdir(d) for d in cgroups.dirs(pod.path, self._root))
        try:
            cgroups.make(pod.path, self._root)
            made = pod.vmcri_parent or not existed
            placement = Placement(pod.path, leaf, made)
            if made and cgroups.memory_hierarchy(self._root) is not None:
                limit = (max_memory_mib + self._options.qemu_memory_allowance_mib) * MIB
                cgroups.set_memory_limit(pod.path, limit, self._root)
            cgroups.make(leaf, self._root)
        except OSError as exc:
            raise HostCommandError(f"cannot make the pod's cgroup {leaf}: {exc}") from exc
        return placement

    def place(self, placement: Placement, qemu_pid: int, domain: str) -> Placement:
        """Move QEMU and every process libvirt put in ``domain``'s cgroup into the leaf,
        in every hierarchy; returns the placement with libvirt's cgroup2 group noted
        (the first time). Raises HostCommandError."""
        found = cgroups.process_cgroups(qemu_pid)
        libvirt_v2 = placement.libvirt_v2
        pids = {qemu_pid}
        for key, path in found.items():
            own = _libvirt_domain_cgroup(path, domain)
            if not own:
                continue
            if key == "" and not libvirt_v2:
                libvirt_v2 = path
            pids |= cgroups.procs(own, self._root)
        targets = [
            h for h in self._hierarchies() if _key(h) not in CONFINING or found.get(_key(h)) == "/"
        ]
        try:
            for pid in sorted(pids):
                cgroups.join(placement.leaf, pid, targets)
        except OSError as exc:
            raise HostCommandError(
                f"cannot move VM {domain}'s processes into {placement.leaf}: {exc}"
            ) from exc
        return Placement(placement.pod, placement.leaf, placement.made_pod, libvirt_v2)

    @contextlib.contextmanager
    def hotplug(self, placement: Placement, qemu_pid: int, domain: str) -> Iterator[None]:
        """Around a vCPU hotplug: QEMU back in libvirt's cgroup2 group (libvirt moves the
        new vCPU thread within it), then everything placed again."""
        v2 = [h for h in self._hierarchies() if h.v2]
        try:
            if placement.libvirt_v2 and v2:
                with contextlib.suppress(OSError):
                    cgroups.join(placement.libvirt_v2, qemu_pid, v2)
            yield
        finally:
            self.place(placement, qemu_pid, domain)

    def weigh(self, placement: Placement, least: bool) -> None:
        """The pod cgroup's CPU weight: the least of its siblings' (a pool VM, which must
        not slow the pods being started) or the default. Raises HostCommandError."""
        try:
            cgroups.set_cpu_weight(placement.pod, least, self._root)
        except OSError as exc:
            raise HostCommandError(f"cannot set the CPU weight of {placement.pod}: {exc}") from exc

    def remove(self, placement: Placement) -> bool:
        """The leaf, and the pod's cgroup if vmcri made it; best effort. False while a
        process still keeps one (the caller may try again)."""
        cgroups.remove_tree(placement.leaf, self._root)
        if placement.made_pod:
            cgroups.remove_tree(placement.pod, self._root)
        path = placement.pod if placement.made_pod else placement.leaf
        return not any(os.path.isdir(d) for d in cgroups.dirs(path, self._root))

    def _hierarchies(self) -> list[Hierarchy]:
        return cgroups.hierarchies(self._root)


def _key(h: Hierarchy) -> str:
    """The hierarchy as ``/proc/<pid>/cgroup`` names it (``""`` for cgroup2)."""
    return "" if h.v2 else h.name.split(",")[0]


def _libvirt_domain_cgroup(path: str, domain: str) -> str:
    """libvirt's cgroup of ``domain`` from where one of its processes is, or "" (not
    libvirt's: the root, a cgroup of ours, another domain's). libvirt names it after the
    domain's short name (its first 20 characters; systemd's escaping turns '-' into
    ``\\x2d``)."""
    own = _LIBVIRT_CHILD.sub("", path)
    last = own.rsplit("/", 1)[-1]
    short = domain[:20]
    mine = short in last or short.replace("-", "\\x2d") in last
    return own if mine and last.endswith((".libvirt-qemu", ".scope")) else ""
