"""A pod VM's disks: its writable file system and its images' read-only layers.

No file server stands between a container and its root filesystem: every pod VM has one
virtio-scsi controller (``domain.SCSI_CONTROLLER``; SCSI disks hotplug onto it without
a PCI slot each, where virtio-blk disks would need a root port apiece), and the host
hotplugs onto it, at target 0, one LUN a disk::

    LUN 0     writable.img: the pod's sized ext4 (``pod_dirs.py`` makes it, empty, before
              the guest ever sees it), read-write; the guest mounts it where its
              containers' overlay upper and work dirs go. Once the guest has it, the
              guest alone decides its bytes: the host never mounts, reads or walks it
              again, and deletes the file with the pod.
    LUN 1...  one a layer the pod's containers use (``vmcri/images/layer_erofs.py``),
              read-only (QEMU opens the file O_RDONLY and the disk reports itself
              write-protected), shared with every other pod and kept until the pod ends;
              the agent mounts each once and stacks them as overlay lowerdirs.

Which LUN holds which file is read back from libvirt's live domain (``Hypervisor.disks``),
so a restarted daemon attaches a layer it attached before at the same LUN again, never
twice. Attaching is serialised per pod, so two containers created at once never pick
the same free LUN.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmcri.errors import ResourceExhausted
from vmcri.handlers.vm.domain import Disk
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.render import render_disk

WRITABLE_LUN = 0
MAX_LUN = 16383  # libvirt's last virtio-scsi unit


class PodDisks:
    """Attaching disks to running pod VMs, one pod at a time."""

    def __init__(self, hypervisor: Hypervisor) -> None:
        self._hypervisor = hypervisor
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _lock(self, domain: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(domain, threading.Lock())

    def forget(self, domain: str) -> None:
        with self._guard:
            self._locks.pop(domain, None)

    def attach_writable(self, domain: str, image: Path) -> int:
        """Hotplug the pod's writable disk (once); returns its LUN. Raises HypervisorError."""
        with self._lock(domain):
            if str(image) not in self._hypervisor.disks(domain):
                disk = Disk(str(image), WRITABLE_LUN, readonly=False)
                self._hypervisor.attach_device(domain, render_disk(disk))
        return WRITABLE_LUN

    def attach_at(self, domain: str, disks: Mapping[int, Path]) -> None:
        """Hotplug each disk at the LUN it had in a saved VM (the writable one at
        ``WRITABLE_LUN``, read-write; layers read-only), before the saved state is loaded.
        Raises HypervisorError."""
        with self._lock(domain):
            for lun, image in sorted(disks.items()):
                disk = Disk(str(image), lun, readonly=lun != WRITABLE_LUN)
                self._hypervisor.attach_device(domain, render_disk(disk))

    def attach_layers(self, domain: str, images: Sequence[Path]) -> list[int]:
        """Hotplug each layer image the pod does not have yet, read-only; returns the LUN
        of each of ``images``, in their order. Raises HypervisorError, ResourceExhausted
        (the controller's LUNs are all taken)."""
        with self._lock(domain):
            attached = self._hypervisor.disks(domain)
            taken = set(attached.values()) | {WRITABLE_LUN}
            luns = []
            for image in images:
                lun = attached.get(str(image))
                if lun is None:
                    lun = next((n for n in range(1, MAX_LUN + 1) if n not in taken), -1)
                    if lun < 0:
                        raise ResourceExhausted(
                            f"VM {domain}: every one of its {MAX_LUN} layer disks is taken"
                        )
                    self._hypervisor.attach_device(domain, render_disk(Disk(str(image), lun, True)))
                    attached[str(image)] = lun
                    taken.add(lun)
                luns.append(lun)
        return luns
