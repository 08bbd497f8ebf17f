"""The guest's disks (``agent/guest/disks.py``) over a fake sysfs and a fake mounter: a LUN
found on the virtio-scsi host only, each layer mounted once and read-only, the writable
disk at the scratch dir, and refusals (a LUN out of range, an agent on the host, a disk
that never appears)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vmcri.agent.guest.disks import MAX_LUN, DiskPaths, GuestDisks
from vmcri.agent.guest.mounts import MS_RDONLY
from vmcri.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument


class FakeMounter:
    def __init__(self) -> None:
        self.mounts: list[tuple[str, str, str, int]] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.mounts.append((source, target, fstype, flags))

    def umount(self, target: str, *, detach: bool = False) -> None:
        self.mounts = [m for m in self.mounts if m[1] != target]

    def is_mounted(self, target: str) -> bool:
        return any(m[1] == target for m in self.mounts)

    def load(self) -> None:
        pass


def _paths(tmp_path: Path) -> DiskPaths:
    paths = DiskPaths(
        sys_scsi=tmp_path / "sys" / "bus" / "scsi" / "devices",
        scsi_hosts=tmp_path / "sys" / "class" / "scsi_host",
        dev=tmp_path / "dev",
        layers=tmp_path / "run" / "layers",
    )
    paths.sys_scsi.mkdir(parents=True)
    paths.dev.mkdir()
    return paths


def _host(paths: DiskPaths, number: int, driver: str) -> None:
    (paths.scsi_hosts / f"host{number}").mkdir(parents=True)
    (paths.scsi_hosts / f"host{number}" / "proc_name").write_text(driver + "\n")


def _disk(paths: DiskPaths, host: int, lun: int, name: str) -> None:
    (paths.sys_scsi / f"{host}:0:0:{lun}" / "block" / name).mkdir(parents=True)
    (paths.dev / name).touch()


def _disks(paths: DiskPaths, mounter: FakeMounter, enabled: bool = True) -> GuestDisks:
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    return GuestDisks(enabled, mounter, paths, clock=lambda: clock[0], sleep=sleep)


def test_layers_are_found_on_the_virtio_scsi_host_and_mounted_once_read_only(
    tmp_path: Path,
) -> None:
    paths = _paths(tmp_path)
    _host(paths, 0, "ahci")  # q35's SATA ports are SCSI hosts too: never ours
    _host(paths, 6, "virtio_scsi")
    _disk(paths, 0, 1, "sdz")
    _disk(paths, 6, 1, "sdb")
    _disk(paths, 6, 2, "sdc")
    mounter = FakeMounter()
    disks = _disks(paths, mounter)

    first = disks.mount_layers([2, 1])
    again = disks.mount_layers([1])

    assert first == [str(paths.layers / "2"), str(paths.layers / "1")]
    assert again == [str(paths.layers / "1")]
    assert mounter.mounts == [
        (str(paths.dev / "sdc"), str(paths.layers / "2"), "erofs", mounter.mounts[0][3]),
        (str(paths.dev / "sdb"), str(paths.layers / "1"), "erofs", mounter.mounts[1][3]),
    ]
    assert all(m[3] & MS_RDONLY for m in mounter.mounts)


def test_the_writable_disk_is_mounted_at_the_scratch_dir_once(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _host(paths, 2, "virtio_scsi")
    _disk(paths, 2, 0, "sda")
    mounter = FakeMounter()
    disks = _disks(paths, mounter)
    scratch = tmp_path / "scratch"
    disks.mount_writable(0, scratch)
    disks.mount_writable(0, scratch)
    assert [(m[0], m[1], m[2]) for m in mounter.mounts] == [
        (str(paths.dev / "sda"), str(scratch), "ext4")
    ]
    assert not mounter.mounts[0][3] & MS_RDONLY


def test_a_disk_whose_node_cannot_be_opened_yet_is_waited_for(short_tmp: Path) -> None:
    """The /dev node shows up before the kernel can open the disk (ENXIO: here a socket
    stands in for it); mounting then would fail, so the agent waits until it opens."""
    paths = _paths(short_tmp)
    _host(paths, 0, "virtio_scsi")
    (paths.sys_scsi / "0:0:0:1" / "block" / "sdb").mkdir(parents=True)
    half_added = socket.socket(socket.AF_UNIX)
    half_added.bind(str(paths.dev / "sdb"))
    polls = [0.0]

    def sleep(s: float) -> None:
        polls[0] += s
        if polls[0] >= 0.1:  # the kernel is done adding it
            half_added.close()
            (paths.dev / "sdb").unlink(missing_ok=True)
            (paths.dev / "sdb").touch()

    mounter = FakeMounter()
    disks = GuestDisks(True, mounter, paths, clock=lambda: polls[0], sleep=sleep)
    assert disks.mount_layers([1]) == [str(paths.layers / "1")]
    assert polls[0] >= 0.1
    assert mounter.mounts[0][0] == str(paths.dev / "sdb")


def test_refusals_before_anything_is_mounted(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    _host(paths, 0, "virtio_scsi")
    mounter = FakeMounter()
    with pytest.raises(InvalidArgument, match="LUN 16384"):
        _disks(paths, mounter).mount_layers([1, MAX_LUN + 1])
    with pytest.raises(FailedPrecondition, match="runs on the host"):
        _disks(paths, mounter, enabled=False).mount_writable(0, tmp_path / "scratch")
    with pytest.raises(DeadlineExceeded, match="LUN 3 did not appear"):
        _disks(paths, mounter).mount_layers([3])
    assert mounter.mounts == []


def test_the_writable_layer_is_measured_in_the_guest_bounded_and_without_following_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmcri.agent.guest import containers

    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "f").write_bytes(b"x" * 8192)
    (upper / "d" / "hard").hardlink_to(upper / "d" / "f")
    (upper / "escape").symlink_to("/usr")
    used, inodes = containers.tree_usage(upper)
    assert inodes == 3  # d, f (once), escape
    assert 8192 <= used < 1 << 20
    monkeypatch.setattr(containers, "MAX_USAGE_ENTRIES", 1)
    assert containers.tree_usage(upper)[1] <= 2


def test_the_writable_file_system_is_read_by_statvfs_and_named_by_its_disk(
    tmp_path: Path,
) -> None:
    from vmcri.agent.guest import containers

    upper = tmp_path / "upper"
    upper.mkdir()
    sys_dev_block = tmp_path / "sys-dev-block"
    sys_dev_block.mkdir()
    dev = os.stat(upper).st_dev
    target = "../../devices/platform/host0/target0:0:0/0:0:0:0/block/sda"
    (sys_dev_block / f"{os.major(dev)}:{os.minor(dev)}").symlink_to(target)
    found = containers.writable_fs(upper, sys_dev_block)
    assert found is not None and found.device == "sda"
    vfs = os.statvfs(upper)
    assert (found.size_bytes, found.inodes_total) == (vfs.f_blocks * vfs.f_frsize, vfs.f_files)
    assert found.inodes_free <= found.inodes_total
    # On no block device (guest memory): no name; gone: nothing.
    assert containers.writable_fs(upper, tmp_path / "none").device == ""  # type: ignore[union-attr]
    assert containers.writable_fs(tmp_path / "gone", sys_dev_block) is None
