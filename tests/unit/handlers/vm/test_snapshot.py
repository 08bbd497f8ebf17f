"""The VM snapshot (vmcri/handlers/vm/snapshot.py) against a QEMU that plays its QMP part:
the migration stream through a handed-over pipe, disks as extents, and the guest always
running again afterwards, whether the save completed, failed or ran out of time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_for
from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import DeadlineExceeded, FailedPrecondition, HypervisorError, InvalidArgument
from vmcri.handlers.vm.snapshot import (
    EXTENTS_MAGIC,
    MEMORY_FILE,
    load_stream,
    save_running,
    unsavable,
    write_extents,
)

RAM = os.urandom(3 << 20)


def _xml(disk: Path | None = None, share: str = "") -> str:
    devices = ""
    if disk is not None:
        devices += (
            f"<disk type='file' device='disk'><source file='{disk}'/><target dev='vdb'/></disk>"
            "<disk type='file'><source file='/ro.img'/><target dev='vda'/><readonly/></disk>"
        )
    if share:
        driver = f"<driver type='{share}'/>"
        devices += f"<filesystem type='mount'>{driver}<target dir='vmcri-pod'/></filesystem>"
    return f"<domain><name>pod</name><devices>{devices}</devices></domain>"


class FakeQemu:
    """QMP as QEMU answers it for a migration to ``fd:``; ``mode`` picks how it ends."""

    def __init__(self, xml: str, mode: str = "complete") -> None:
        self.xml = xml
        self.mode = mode  # complete | fail | hang
        self.fds: dict[str, int] = {}
        self.status = "none"
        self.running = True
        self.commands: list[str] = []
        self._writer: threading.Thread | None = None
        self.loaded = b""
        self.blocked: list[str] = []  # QEMU's migration blockers

    def live_xml(self, name: str) -> str:
        return self.xml

    def pass_fd(self, name: str, fd_name: str, fd: int) -> None:
        self.fds[fd_name] = os.dup(fd)

    def qmp(self, name: str, command: str, **arguments: Any) -> Any:
        self.commands.append(command)
        if command == "migrate":
            fd = self.fds.pop(arguments["uri"].removeprefix("fd:"))
            self.status = "active"
            self._writer = threading.Thread(target=self._migrate, args=(fd,))
            self._writer.start()
        elif command == "migrate-incoming":
            fd = self.fds.pop(arguments["uri"].removeprefix("fd:"))
            self.running = False
            self._writer = threading.Thread(target=self._incoming, args=(fd,))
            self._writer.start()
        elif command == "query-migrate":
            blocked = {"blocked-reasons": self.blocked} if self.blocked else {}
            return {"status": self.status, "error-desc": "disk full", **blocked}
        elif command == "query-status":
            return {"running": self.running}
        elif command == "cont":
            self.running = True
        elif command == "migrate_cancel":
            self.status = "cancelled"
        return {}

    def _incoming(self, fd: int) -> None:
        parts = []
        with os.fdopen(fd, "rb") as stream:
            while chunk := stream.read(1 << 16):
                parts.append(chunk)
        self.loaded = b"".join(parts)
        self.running = True  # libvirt's "cont" once the state is in

    def _migrate(self, fd: int) -> None:
        try:
            if self.mode == "hang":
                while self.status == "active":
                    time.sleep(0.01)
                return
            os.write(fd, RAM[: len(RAM) // 2])
            if self.mode == "fail":
                self.status = "failed"
                return
            os.write(fd, RAM[len(RAM) // 2 :])
            self.running = False  # the last round pauses the guest (postmigrate)
            self.status = "completed"
        finally:
            os.close(fd)


def _writer(tmp_path: Path) -> tuple[CheckpointWriter, int]:
    fd = open_directory(str(tmp_path), "path")
    return CheckpointWriter(fd, str(tmp_path)), fd


def test_a_save_writes_the_stream_and_the_writable_disk_and_the_guest_runs_on(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "layer.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of which 8 KiB hold data
        f.seek(1 << 20)
        f.write(b"x" * 4096)
        f.seek(40 << 20)
        f.write(b"y" * 4096)
    qemu = FakeQemu(_xml(disk))
    (tmp_path / "ckpt").mkdir()
    out, fd = _writer(tmp_path / "ckpt")
    entries = {e.name: e for e in save_running(qemu, "pod", out.write, Deadline.of(None))}
    os.close(fd)
    assert (tmp_path / "ckpt" / "vmcri-checkpoint" / MEMORY_FILE).read_bytes() == RAM
    assert set(entries) == {MEMORY_FILE, "disk-vdb.extents"}  # not the read-only vda
    assert entries["disk-vdb.extents"].size < 64 << 10  # the data, not the holes
    assert qemu.running and qemu.commands[-1] == "cont"
    # The extents rebuild the same disk.
    target = os.open(tmp_path / "rebuilt.img", os.O_RDWR | os.O_CREAT, 0o600)
    with open(tmp_path / "ckpt" / "vmcri-checkpoint" / "disk-vdb.extents", "rb") as extents:
        write_extents(extents.read, target, 1 << 30)
    os.close(target)
    assert (tmp_path / "rebuilt.img").read_bytes() == disk.read_bytes()


def test_a_failed_migration_is_an_error_and_the_guest_runs_on(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml(), mode="fail")
    out, fd = _writer(tmp_path)
    with pytest.raises(HypervisorError, match="disk full"):
        save_running(qemu, "pod", out.write, Deadline.of(None))
    os.close(fd)
    assert qemu.running


def test_the_deadline_cancels_the_migration_and_resumes_the_guest(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml(), mode="hang")
    qemu.running = False  # QEMU paused the guest for its last round, then got stuck
    out, fd = _writer(tmp_path)
    with pytest.raises(DeadlineExceeded):
        save_running(qemu, "pod", out.write, Deadline(time.monotonic() + 0.3))
    os.close(fd)
    assert "migrate_cancel" in qemu.commands and qemu.running


MOUNTED = (
    "Migration is disabled when VirtFS export path '/run/x/share' is mounted in the guest "
    "using mount_tag 'vmcri-pod'"
)


def test_a_guest_that_mounted_its_share_is_refused_before_anything_moves(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml(share="path"))
    qemu.blocked = [MOUNTED]
    assert unsavable(qemu, "pod") == [MOUNTED]
    out, fd = _writer(tmp_path)
    with pytest.raises(FailedPrecondition, match="VirtFS export path"):
        save_running(qemu, "pod", out.write, Deadline.of(None))
    os.close(fd)
    assert "migrate" not in qemu.commands and qemu.running


def test_a_virtio_fs_share_is_refused_even_unmounted(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml(share="virtiofs"))
    assert unsavable(qemu, "pod") == [
        "virtio-fs share vmcri-pod (vhost-user-fs cannot be migrated)"
    ]


def test_a_9p_device_the_guest_never_mounted_does_not_stop_a_save(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml(share="path"))
    out, fd = _writer(tmp_path)
    entries = save_running(qemu, "pod", out.write, Deadline.of(None))
    os.close(fd)
    assert [entry.name for entry in entries] == [MEMORY_FILE] and qemu.running


def test_extents_that_lie_past_the_disk_are_refused(tmp_path: Path) -> None:
    import io
    import struct

    data = EXTENTS_MAGIC + struct.pack("<Q", 4096) + struct.pack("<QQ", 4000, 200) + b"z" * 200
    target = os.open(tmp_path / "t.img", os.O_RDWR | os.O_CREAT, 0o600)
    with pytest.raises(InvalidArgument, match="past its end"):
        write_extents(io.BytesIO(data).read, target, 1 << 20)
    os.close(target)


def test_a_saved_stream_is_loaded_into_a_waiting_domain_which_then_runs(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml())
    (tmp_path / "state").write_bytes(RAM)
    with open(tmp_path / "state", "rb") as stream:
        load_stream(qemu, "pod", stream.fileno(), len(RAM), Deadline.of(None))
    assert qemu.running
    wait_for(lambda: qemu.loaded == RAM, timeout=10, what="QEMU to have read the stream")


def test_a_stream_shorter_than_its_manifest_says_is_an_error(tmp_path: Path) -> None:
    qemu = FakeQemu(_xml())
    (tmp_path / "state").write_bytes(RAM[:1000])
    with (
        open(tmp_path / "state", "rb") as stream,
        pytest.raises(HypervisorError, match="ended 1000 bytes early"),
    ):
        load_stream(qemu, "pod", stream.fileno(), 2000, Deadline.of(None))
