"""What a VM pod's checkpoint must say of its machine, so that another QEMU can load it.

QEMU loads a migration stream only into the very machine that wrote it: the same RAM
blocks, the same devices at the same addresses. vmcri's pod VMs are all designed by one
function from a template shape (``template.py``), so the checkpoint records the shape and
what was hotplugged into the VM since it started: the SCSI disks at their LUNs (the
writable disk and each layer's erofs, named by the layer's chain ID, never by a host path)
and the NIC's MAC (the guest's driver keeps the saved one; it takes the new pod's after).
A restore designs the same machine from the new pod's own config and refuses when that
gives another shape, and finds each layer in this node's image store.

The checkpoint is data, not code: :func:`parse` checks every fact before any is used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.disks import MAX_LUN, WRITABLE_LUN
from vmcri.handlers.vm.sizing import VmSize

WRITABLE = "writable"
# A template clone's design: a VM restored from a template, or from a checkpoint.
TEMPLATE = "template"
COLD = "cold"
_CHAIN_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MAX_FACT = 64 << 10


@dataclass(frozen=True)
class SavedVm:
    """The machine a checkpoint's stream loads into."""

    machine: str  # TEMPLATE (a template's RAM block and devices) or COLD (a cold boot's)
    shape: dict[str, object]  # template.Shape as a dict: what the new pod must design
    disks: dict[int, str]  # LUN -> WRITABLE or the layer's chain ID (hex)
    mac: str  # the NIC's MAC in the saved guest ("" without a NIC)
    cpu: str = ""  # under KVM: the host's CPU (host_cpu.py), which the guest saw whole
    memory_mib: int = 0  # its size when saved (grown past its boot size, maybe): RAM now
    vcpus: int = 0  # and vCPUs online

    def facts(self) -> dict[str, str]:
        return {
            "machine": self.machine,
            "shape": json.dumps(self.shape, sort_keys=True),
            "disks": json.dumps({str(lun): what for lun, what in sorted(self.disks.items())}),
            "mac": self.mac,
            "cpu": self.cpu,
            "size": f"{self.memory_mib}/{self.vcpus}",
        }

    def cpu_mismatch(self, here: str) -> str | None:
        """Why a KVM guest saved on another CPU cannot load on this host's ``here``."""
        if self.shape.get("domain_type") != "kvm" or self.cpu == here:
            return None
        return (
            f"the checkpoint's KVM guest ran on CPU {self.cpu[:200]!r}, this host's is "
            f"{here!r}: a guest that sees the host's CPU whole (host-passthrough) cannot "
            "move between different ones"
        )

    def grown(self, booted: VmSize) -> VmSize:
        """``booted`` (the restored VM's design) at the size the saved guest had grown to:
        its plugged memory and online vCPUs come back with its state. InvalidArgument
        when that size does not fit the machine (a checkpoint edited to claim more)."""
        if not (
            booted.boot_memory_mib <= self.memory_mib <= booted.max_memory_mib
            and 1 <= self.vcpus <= booted.max_vcpus
        ):
            raise InvalidArgument(
                f"path: the checkpoint's VM size {self.memory_mib} MiB/{self.vcpus} vCPU does "
                f"not fit its machine (at most {booted.max_memory_mib} MiB/"
                f"{booted.max_vcpus} vCPU)"
            )
        return dataclasses.replace(booted, memory_mib=self.memory_mib, vcpus=self.vcpus)

    def layers(self) -> dict[int, str]:
        return {lun: what for lun, what in self.disks.items() if what != WRITABLE}


def parse(facts: Mapping[str, str]) -> SavedVm:
    """The checkpoint's VM facts, each checked. Raises InvalidArgument naming the fact."""
    for key in ("machine", "shape", "disks", "mac", "cpu", "size"):
        if key not in facts or len(facts[key]) > _MAX_FACT:
            raise InvalidArgument(f"path: the checkpoint's VM fact {key!r} is missing or too long")
    if facts["machine"] not in (TEMPLATE, COLD):
        raise InvalidArgument(
            f"path: the checkpoint's VM machine {facts['machine'][:20]!r} is unknown"
        )
    try:
        shape = json.loads(facts["shape"])
        raw_disks = json.loads(facts["disks"])
    except ValueError as exc:
        raise InvalidArgument(f"path: the checkpoint's VM facts are not JSON: {exc}") from exc
    if not isinstance(shape, dict) or not isinstance(raw_disks, dict):
        raise InvalidArgument("path: the checkpoint's VM shape or disks are not objects")
    disks: dict[int, str] = {}
    for key, what in raw_disks.items():
        if not key.isdigit() or not 0 <= int(key) <= MAX_LUN or not isinstance(what, str):
            raise InvalidArgument(f"path: the checkpoint's VM disk {key[:8]!r} is not valid")
        lun = int(key)
        if (what == WRITABLE) != (lun == WRITABLE_LUN) or (
            what != WRITABLE and not _CHAIN_HEX.match(what)
        ):
            raise InvalidArgument(f"path: the checkpoint's VM disk at LUN {lun} is not valid")
        disks[lun] = what
    mac = facts["mac"]
    if mac and not _MAC.match(mac):
        raise InvalidArgument("path: the checkpoint's VM MAC is not valid")
    memory, _, vcpus = facts["size"].partition("/")
    if not memory.isdigit() or not vcpus.isdigit() or len(facts["size"]) > 24:
        raise InvalidArgument("path: the checkpoint's VM size is not valid")
    return SavedVm(facts["machine"], shape, disks, mac, facts["cpu"], int(memory), int(vcpus))


def shape_dict(shape: object) -> dict[str, object]:
    """A template shape (a dataclass) as the checkpoint records it."""
    return asdict(shape)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class SavedPod:
    """A checkpoint being restored into a new pod's VM, as ``VmBackend.restore_saved``
    takes it: the machine, this node's erofs file of each saved layer disk, and the
    verified checkpoint's data behind two calls."""

    vm: SavedVm
    layers: Mapping[int, Path]  # LUN -> the layer's erofs image on this node
    write_writable: Callable[[int, int], None]  # (the new writable.img's fd, its size)
    load: Callable[[str], None]  # feed the saved stream into this domain; it runs after
