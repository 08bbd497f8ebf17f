"""The VM handler's part of a checkpoint: the pod's whole VM, saved while it runs.

A VM pod holds all its state in one place (every process, the guest kernel with its
sockets, pipes and shared memory, in-guest emptyDirs), so its checkpoint is complete
where CRIU's is not: :mod:`vmcri.handlers.vm.snapshot` writes the migration stream
(memory in use and device state) and the writable disks, the guest paused only for the
stream's last round and the disk copy. The manifest records the guest image version
and QEMU's version: a saved stream loads only into the same machine type and QEMU.

Refused, with the reason QEMU gives, while the guest has mounted the pod's 9p share:
the agent mounts it when a container first has a volume on the share (hostPath, persistent
and image volumes, a configMap-like volume too big to copy: ``guest_volumes.py``), and QEMU
says "Migration is disabled when VirtFS export path ... is mounted in the guest"; the
refusal names each container's volume on the share. A virtio-fs share cannot be saved at
all. A pod whose volumes all live in its guest (emptyDirs, small configMaps, secrets,
projected tokens, its /etc/hosts) is saved whole, those volumes with it; the restored pod's
copied volumes are synced again from its own config's host paths.
RestorePod loads the stream into the machine it was saved from (``saved_vm.py``,
``boot.py:_boot_saved``): designed from the new pod's config, refused when that gives
another template shape; the guest then takes the new pod's address and MAC, and its
containers run on under their saved IDs (``keeps_container_ids``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import Manifest, SavedContainer
from vmcri.checkpoint.reader import VerifiedCheckpoint
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import FailedPrecondition, HypervisorError, InvalidArgument
from vmcri.handlers.base import SandboxBackend, SandboxStarted
from vmcri.handlers.checkpointer import PodCheckpointer, Refusal, RestoredContainer, SavedState
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.guest_image import load_guest_image
from vmcri.handlers.vm.host_cpu import host_cpu
from vmcri.handlers.vm.layout import GUEST_ROOTFS
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.saved_vm import SavedPod, SavedVm, parse
from vmcri.handlers.vm.snapshot import (
    MEMORY_FILE,
    DomainMonitor,
    LibvirtMonitor,
    load_stream,
    save_running,
    unsavable,
    write_extents,
)
from vmcri.images.layer_erofs import layer_image
from vmcri.model import ImageInfo
from vmcri.store.records import ContainerRecord, SandboxRecord

VIRTIOFS_REASON = (
    'this handler shares pods\' volumes over virtio-fs (options.shared_fs, or "auto" with a '
    "virtiofsd on the node and templates off), and QEMU cannot save a VM with a vhost-user-fs "
    'device; options.shared_fs = "9p" makes its pods savable'
)
VOLUME_REASON = (
    "QEMU cannot save this pod's VM: {reasons}. A VM pod is saved whole only while no "
    "container mounts a volume from the host (the guest then mounts the pod's 9p share, "
    "which QEMU cannot migrate); here {volumes}"
)


class PodVms(Protocol):
    """What the checkpointer needs of the VM backend (``VmBackend``)."""

    @property
    def share_driver(self) -> str:
        """ "9p" or "virtiofs": how the backend's pods get their volumes."""
        ...

    def saved_machine(self, sandbox: SandboxRecord) -> SavedVm: ...

    def in_guest(self, sandbox_id: str, host_path: str) -> bool:
        """Whether the pod keeps this volume in its guest (not on the share)."""
        ...

    def restore_saved(self, sandbox: SandboxRecord, saved: SavedPod) -> SandboxStarted: ...

    def adopt_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int: ...


def create(backend: SandboxBackend, options: VmOptions, context: BackendContext) -> PodCheckpointer:
    return VmCheckpointer(LibvirtMonitor(options.libvirt_uri), options, cast(PodVms, backend))


class VmCheckpointer:
    keeps_container_ids = True

    def __init__(self, monitor: DomainMonitor, options: VmOptions, vms: PodVms) -> None:
        self._monitor = monitor
        self._options = options
        self._vms = vms

    def unavailable(self) -> Refusal | None:
        if self._vms.share_driver == "virtiofs":
            return Refusal("FAILED_PRECONDITION", VIRTIOFS_REASON)
        return None

    def refusal(
        self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]
    ) -> Refusal | None:
        name = sandbox.runtime.get("domain", "")
        if not name:
            return Refusal("FAILED_PRECONDITION", "the pod's VM is not known (no domain)")
        try:
            reasons = unsavable(self._monitor, name)
        except HypervisorError as exc:
            return Refusal("FAILED_PRECONDITION", f"the pod's VM cannot be read: {exc.message}")
        if not reasons:
            return None
        if self._vms.share_driver == "virtiofs":
            return Refusal("FAILED_PRECONDITION", f"{VIRTIOFS_REASON}: {'; '.join(reasons)}")
        volumes = [
            f"container {c.config.metadata.name!r} mounts {m.container_path!r}"
            + (f" (image {m.image!r})" if m.image else f" (host path {m.host_path!r})")
            for c in containers
            for m in c.config.mounts
            if m.image or not self._vms.in_guest(sandbox.id, m.host_path)
        ]
        said = ", ".join(volumes) if volumes else "no container mounts one now, but one did"
        return Refusal(
            "FAILED_PRECONDITION", VOLUME_REASON.format(reasons="; ".join(reasons), volumes=said)
        )

    def save(
        self,
        sandbox: SandboxRecord,
        containers: Sequence[ContainerRecord],
        out: CheckpointWriter,
        deadline: Deadline,
    ) -> SavedState:
        name = sandbox.runtime["domain"]
        machine = self._vms.saved_machine(sandbox)  # its disks, before anything moves
        save_running(self._monitor, name, out.write, deadline)
        return SavedState(
            guest_image_version=self._guest_version(),
            facts={"domain": name, "qemu": self._monitor_version(name), **machine.facts()},
        )

    def restorable(self, manifest: Manifest) -> Refusal | None:
        here = self._guest_version()
        if manifest.guest_image_version != here:
            return Refusal(
                "FAILED_PRECONDITION",
                f"the checkpoint's guest image is {manifest.guest_image_version!r}, "
                f"this node's is {here!r}",
            )
        try:
            vm = parse(manifest.handler_facts)
        except InvalidArgument as exc:
            return Refusal("FAILED_PRECONDITION", exc.message)
        if mismatch := vm.cpu_mismatch(host_cpu()):
            return Refusal("FAILED_PRECONDITION", mismatch)
        return None

    def restore_sandbox(
        self,
        sandbox: SandboxRecord,
        source: VerifiedCheckpoint,
        deadline: Deadline,
        images: Sequence[ImageInfo],
    ) -> SandboxStarted:
        vm = parse(source.manifest.handler_facts)
        here = {Path(d).parent.name: Path(d) for image in images for d in image.layer_dirs}
        layers: dict[int, Path] = {}
        for lun, chain in vm.layers().items():
            if chain not in here:
                raise FailedPrecondition(
                    f"path: the checkpoint's layer disk at LUN {lun} (layer {chain[:12]}) is "
                    "of no image the container_configs name here"
                )
            layers[lun] = layer_image(here[chain])
        disks = [f.name for f in source.manifest.files if f.name.startswith("disk-")]
        if len(disks) > 1:
            raise InvalidArgument("path: the checkpoint holds more than one writable disk")

        def write_writable(fd: int, size: int) -> None:
            if not disks:
                raise InvalidArgument("path: the checkpoint's writable disk is missing")
            with source.open(disks[0]) as disk_fd, os.fdopen(os.dup(disk_fd), "rb") as stream:
                write_extents(stream.read, fd, size)

        def load(name: str) -> None:
            entry = source.manifest.file(MEMORY_FILE)
            with source.open(MEMORY_FILE) as fd:
                load_stream(self._monitor, name, fd, entry.size, deadline)

        deadline.check("preparing the restored VM")
        return self._vms.restore_saved(sandbox, SavedPod(vm, layers, write_writable, load))

    def restore_container(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        saved: SavedContainer,
        source: VerifiedCheckpoint,
        deadline: Deadline,
    ) -> RestoredContainer:
        deadline.check(f"restoring container {saved.name}")
        pid = self._vms.adopt_container(sandbox, container)
        return RestoredContainer({"rootfs": GUEST_ROOTFS}, pid)

    def _guest_version(self) -> str:
        try:
            return load_guest_image(self._options.guest_path).version
        except FailedPrecondition:
            return ""  # no image here: no VM pod could run or be restored either

    def _monitor_version(self, name: str) -> str:
        try:
            version = self._monitor.qmp(name, "query-version") or {}
        except HypervisorError:
            return ""
        qemu = version.get("qemu", {})
        return f"{qemu.get('major', '?')}.{qemu.get('minor', '?')}.{qemu.get('micro', '?')}"
