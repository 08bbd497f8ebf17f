"""The VM handler's checkpointer over a QMP fake: what it refuses and what it records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.checkpoints import write_checkpoint
from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.reader import verify
from vmcri.handlers.vm.checkpoint import PodVms, VmCheckpointer
from vmcri.handlers.vm.options import VmOptions
from vmcri.model import ContainerConfig, Metadata, Mount, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord

SHARE = "<filesystem type='mount'><driver type='path'/><target dir='vmcri'/></filesystem>"


MOUNTED = (
    "Migration is disabled when VirtFS export path '/run/x/share' is mounted in the guest "
    "using mount_tag 'vmcri-pod'"
)


class Monitor:
    def __init__(self, devices: str, blocked: tuple[str, ...] = ()) -> None:
        self.xml = f"<domain><devices>{devices}</devices></domain>"
        self.blocked = list(blocked)
        self.commands: list[str] = []

    def live_xml(self, name: str) -> str:
        return self.xml

    def qmp(self, name: str, command: str, **arguments: Any) -> Any:
        self.commands.append(command)
        if command == "query-migrate" and self.blocked:
            return {"blocked-reasons": self.blocked}
        return {}

    def pass_fd(self, name: str, fd_name: str, fd: int) -> None:
        self.commands.append("getfd")


@dataclass
class Vms:
    """The backend as the checkpointer's refusals see it (saves and restores not here)."""

    share_driver: str = "9p"
    guest_paths: tuple[str, ...] = ()

    def in_guest(self, sandbox_id: str, host_path: str) -> bool:
        return host_path in self.guest_paths


NO_VMS = cast(PodVms, Vms())


def _guest(tmp_path: Path, version: str) -> VmOptions:
    for name in ("vmlinuz", "initrd.img", "rootfs.img"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "VERSION").write_text(version)
    return VmOptions(guest_dir=str(tmp_path))


def _sandbox() -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
    return SandboxRecord("a" * 64, "vm", "vm", config, runtime={"domain": "vmcri-a"})


def _container(*mounts: Mount) -> ContainerRecord:
    config = ContainerConfig(metadata=Metadata(name="app"), image="busybox", mounts=mounts)
    return ContainerRecord("c" * 64, "a" * 64, config, "sha256:" + "1" * 64, "busybox")


def test_a_pod_whose_guest_mounted_its_share_is_refused_naming_each_volume(
    tmp_path: Path,
) -> None:
    monitor = Monitor(SHARE, blocked=(MOUNTED,))
    container = _container(
        Mount("/data", host_path="/var/lib/kubelet/pods/u/volumes/d"), Mount("/img", image="x:1")
    )
    refusal = VmCheckpointer(monitor, _guest(tmp_path, "g1"), NO_VMS).refusal(
        _sandbox(), [container]
    )
    assert refusal is not None and refusal.code == "FAILED_PRECONDITION"
    assert "Migration is disabled" in refusal.reason
    assert "container 'app' mounts '/data' (host path '/var/lib/kubelet/pods/u/volumes/d')" in (
        refusal.reason
    )
    assert "mounts '/img' (image 'x:1')" in refusal.reason
    assert monitor.commands == ["query-migrate"]  # asked, never paused


def test_a_pod_whose_guest_never_mounted_its_share_may_be_checkpointed(tmp_path: Path) -> None:
    checkpointer = VmCheckpointer(Monitor(SHARE), _guest(tmp_path, "g1"), NO_VMS)
    assert checkpointer.unavailable() is None
    assert checkpointer.refusal(_sandbox(), [_container()]) is None


def test_a_handler_sharing_over_virtio_fs_cannot_checkpoint(tmp_path: Path) -> None:
    virtiofs = cast(PodVms, Vms("virtiofs"))
    checkpointer = VmCheckpointer(Monitor("", blocked=(MOUNTED,)), _guest(tmp_path, "g1"), virtiofs)
    refusal = checkpointer.unavailable()
    assert refusal is not None and "virtio-fs" in refusal.reason
    refusal = checkpointer.refusal(_sandbox(), [_container()])
    assert refusal is not None and "virtio-fs" in refusal.reason
    assert "shared_fs" in refusal.reason and "mounts" not in refusal.reason


@pytest.mark.parametrize(
    ("here", "said"), [("g2", "this node's is 'g2'"), ("g1", "VM fact 'machine' is missing")]
)
def test_a_vm_checkpoint_is_refused_for_restore_saying_why(
    tmp_path: Path, here: str, said: str
) -> None:
    (tmp_path / "guest").mkdir()
    (tmp_path / "ckpt").mkdir()
    write_checkpoint(tmp_path / "ckpt", {"vm-state.migration": b"QEVM"})
    fd = open_directory(str(tmp_path / "ckpt"), "path")
    try:
        source = verify(fd, str(tmp_path / "ckpt"), Deadline.of(None))
    finally:
        os.close(fd)
    checkpointer = VmCheckpointer(Monitor(""), _guest(tmp_path / "guest", here), NO_VMS)
    refusal = checkpointer.restorable(source.manifest)
    source.close()
    assert refusal is not None and refusal.code == "FAILED_PRECONDITION"
    assert said in refusal.reason
