"""The VM handler's checkpointer over a QMP fake: what it refuses and what it records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.checkpoints import write_checkpoint
from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.reader import verify
from vmcri.handlers.vm.checkpoint import VmCheckpointer
from vmcri.handlers.vm.options import VmOptions
from vmcri.model import Metadata, PodConfig
from vmcri.store.records import SandboxRecord

SHARE = "<filesystem type='mount'><driver type='path'/><target dir='vmcri'/></filesystem>"


class Monitor:
    def __init__(self, devices: str) -> None:
        self.xml = f"<domain><devices>{devices}</devices></domain>"
        self.commands: list[str] = []

    def live_xml(self, name: str) -> str:
        return self.xml

    def qmp(self, name: str, command: str, **arguments: Any) -> Any:
        self.commands.append(command)
        return {}

    def pass_fd(self, name: str, fd_name: str, fd: int) -> None:
        self.commands.append("getfd")


def _guest(tmp_path: Path, version: str) -> VmOptions:
    for name in ("vmlinuz", "initrd.img", "rootfs.img"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "VERSION").write_text(version)
    return VmOptions(guest_dir=str(tmp_path))


def _sandbox() -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
    return SandboxRecord("a" * 64, "vm", "vm", config, runtime={"domain": "vmcri-a"})


def test_a_pod_whose_vm_exports_its_rootfs_is_refused_naming_the_share(tmp_path: Path) -> None:
    monitor = Monitor(SHARE)
    refusal = VmCheckpointer(monitor, _guest(tmp_path, "g1")).refusal(_sandbox())
    assert refusal is not None and refusal.code == "FAILED_PRECONDITION"
    assert "vmcri (9p)" in refusal.reason and "Migration is disabled" in refusal.reason
    assert monitor.commands == []  # nothing was asked of QEMU, the guest never paused


def test_a_pod_without_a_share_may_be_checkpointed(tmp_path: Path) -> None:
    checkpointer = VmCheckpointer(Monitor(""), _guest(tmp_path, "g1"))
    assert checkpointer.refusal(_sandbox()) is None


@pytest.mark.parametrize(("here", "said"), [("g2", "this node's is 'g2'"), ("g1", "boot")])
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
    checkpointer = VmCheckpointer(Monitor(""), _guest(tmp_path / "guest", here))
    refusal = checkpointer.restorable(source.manifest)
    source.close()
    assert refusal is not None and refusal.code == "FAILED_PRECONDITION"
    assert said in refusal.reason
