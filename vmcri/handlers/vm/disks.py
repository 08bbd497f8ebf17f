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

QEMU opens a hotplugged disk by path (libvirt 9.0 passes descriptors at start-up only), so
each layer reaches it through a hard link in the pod's own ``layers/`` (``link_layers``):
the pod's QEMU is jailed to its own files (``launcher.py``), where the layer store is out
of its reach but these links are in, read-only.

Which LUN holds which file is read back from libvirt's live domain (``Hypervisor.disks``),
so a restarted daemon attaches a layer it attached before at the same LUN again, never
twice. Attaching is serialised per pod, so two containers created at once never pick
the same free LUN.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmcri.errors import ResourceExhausted
from vmcri.handlers.vm.domain import Disk
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.render import render_disk

WRITABLE_LUN = 0
MAX_LUN = 16383  # libvirt's last virtio-scsi unit


def link_layers(images: Sequence[Path], links: Path) -> list[Path]:
    """Each layer image (``layers/<chain>/layer.erofs`` of the image store) as the pod's
    QEMU opens it: ``links/<chain>/layer.erofs``, a hard link (a copy where the store is on
    another file system). The chain stays the link's directory name (``saved_vm.py``).
    Raises OSError."""
    linked = []
    for image in images:
        link = links / image.parent.name / image.name
        if not link.exists():
            link.parent.mkdir(mode=0o700, exist_ok=True)
            try:
                os.link(image, link)
            except FileExistsError:
                pass  # linked since (a daemon restarted while attaching)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                staging = link.with_name(f".{link.name}.copy")
                shutil.copyfile(image, staging)
                os.chmod(staging, 0o444)
                os.replace(staging, link)
        linked.append(link)
    return linked


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

    def attach_at(self, domain: str, disks: Mapping[int, Path], links: Path) -> None:
        """Hotplug each disk at the LUN it had in a saved VM (the writable one at
        ``WRITABLE_LUN``, read-write; layers read-only, through their links in ``links``),
        before the saved state is loaded. Raises HypervisorError, OSError."""
        layers = sorted((lun, image) for lun, image in disks.items() if lun != WRITABLE_LUN)
        images = link_layers([image for _, image in layers], links)
        linked = dict(zip([lun for lun, _ in layers], images, strict=True))
        with self._lock(domain):
            for lun, image in sorted({**disks, **linked}.items()):
                disk = Disk(str(image), lun, readonly=lun != WRITABLE_LUN)
                self._hypervisor.attach_device(domain, render_disk(disk))

    def attach_layers(self, domain: str, images: Sequence[Path], links: Path) -> list[int]:
        """Hotplug each layer image the pod does not have yet, read-only, through its link
        in ``links``; returns the LUN of each of ``images``, in their order. Raises
        HypervisorError, ResourceExhausted (the controller's LUNs are all taken), OSError."""
        images = link_layers(images, links)
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
