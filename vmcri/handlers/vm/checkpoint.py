"""The VM handler's part of a checkpoint: the pod's whole VM, saved while it runs.

A VM pod holds all its state in one place (every process, the guest kernel with its
sockets, pipes and shared memory, in-guest emptyDirs), so its checkpoint is complete
where CRIU's is not: :mod:`vmcri.handlers.vm.snapshot` writes the migration stream
(memory in use and device state) and the writable disks, the guest paused only for the
stream's last round and the disk copy. The manifest records the guest image version
and QEMU's version: a saved stream loads only into the same machine type and QEMU.

Refused, with the reason, while a pod's domain exports a host directory (the 9p or
virtio-fs rootfs share: QEMU says "Migration is disabled when VirtFS export path ... is
mounted in the guest"): every VM pod until the rootfs share is replaced by a block
device. Restoring needs the VM backend to boot a domain that waits for an incoming
stream in place of a cold boot (its template clones do this with RAM in a shared file);
until that path takes a checkpoint's stream, RestorePod of a VM checkpoint is refused
FAILED_PRECONDITION after the checkpoint verified.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import Manifest, SavedContainer
from vmcri.checkpoint.reader import VerifiedCheckpoint
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import FailedPrecondition, HypervisorError
from vmcri.handlers.base import SandboxBackend, SandboxStarted
from vmcri.handlers.checkpointer import PodCheckpointer, Refusal, SavedState
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.guest_image import load_guest_image
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.snapshot import DomainMonitor, LibvirtMonitor, host_shares, save_running
from vmcri.store.records import ContainerRecord, SandboxRecord

SHARE_REASON = (
    "QEMU cannot save a VM while it exports a host directory to the guest ({shares}: "
    '"Migration is disabled when VirtFS export path ... is mounted in the guest"); '
    "VM pods can be checkpointed once their root file system is no longer such a share"
)
RESTORE_REASON = (
    "restoring a VM pod needs the VM backend to boot a domain from a checkpoint's "
    "migration stream, which it does not do yet"
)


def create(backend: SandboxBackend, options: VmOptions, context: BackendContext) -> PodCheckpointer:
    return VmCheckpointer(LibvirtMonitor(options.libvirt_uri), options)


class VmCheckpointer:
    def __init__(self, monitor: DomainMonitor, options: VmOptions) -> None:
        self._monitor = monitor
        self._options = options

    def unavailable(self) -> Refusal | None:
        # Every VM pod's domain has the rootfs share today (the designer always adds it).
        return Refusal("FAILED_PRECONDITION", SHARE_REASON.format(shares="the rootfs share"))

    def refusal(self, sandbox: SandboxRecord) -> Refusal | None:
        name = sandbox.runtime.get("domain", "")
        if not name:
            return Refusal("FAILED_PRECONDITION", "the pod's VM is not known (no domain)")
        try:
            shares = host_shares(self._monitor.live_xml(name))
        except HypervisorError as exc:
            return Refusal("FAILED_PRECONDITION", f"the pod's VM cannot be read: {exc.message}")
        if shares:
            return Refusal("FAILED_PRECONDITION", SHARE_REASON.format(shares=", ".join(shares)))
        return None

    def save(
        self,
        sandbox: SandboxRecord,
        containers: Sequence[ContainerRecord],
        out: CheckpointWriter,
        deadline: Deadline,
    ) -> SavedState:
        name = sandbox.runtime["domain"]
        save_running(self._monitor, name, out.write, deadline)
        return SavedState(
            guest_image_version=self._guest_version(),
            facts={"domain": name, "qemu": self._monitor_version(name)},
        )

    def restorable(self, manifest: Manifest) -> Refusal | None:
        here = self._guest_version()
        if manifest.guest_image_version != here:
            return Refusal(
                "FAILED_PRECONDITION",
                f"the checkpoint's guest image is {manifest.guest_image_version!r}, "
                f"this node's is {here!r}",
            )
        return Refusal("FAILED_PRECONDITION", RESTORE_REASON)

    def restore_sandbox(
        self, sandbox: SandboxRecord, source: VerifiedCheckpoint, deadline: Deadline
    ) -> SandboxStarted:
        raise FailedPrecondition(RESTORE_REASON)

    def restore_container(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        saved: SavedContainer,
        source: VerifiedCheckpoint,
        deadline: Deadline,
    ) -> int:
        raise FailedPrecondition(RESTORE_REASON)

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
