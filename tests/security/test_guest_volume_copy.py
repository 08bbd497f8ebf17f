"""A hostile volume directory against the host's copy of it into a VM pod's guest.

Whoever can write a configMap-like volume's host directory (kubelet should be the only one;
these tests play someone else) picks what the host reads there to copy into the guest:
symlinks out of the volume (to /etc/shadow, to another pod's secret), a FIFO that would
block an opener, a device node, a sparse file of gigabytes, thousands of names, a deep or
looping tree. Each test asserts the copy holds nothing from outside the volume and that
the read ends at once, or refuses the volume (it then stays on the share).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from vmcri.agent.types import VolumeKind
from vmcri.handlers.vm.guest_volumes import (
    MAX_BYTES,
    MAX_ENTRIES,
    GuestVolume,
    TooBig,
    guest_volume,
    read_volume,
)
from vmcri.model import Mount

SECRET = "the other pod's secret\n"


def _volume(root: Path, uid: str, name: str, plugin: str = "secret") -> Path:
    path = root / "pods" / uid / "volumes" / f"kubernetes.io~{plugin}" / name
    path.mkdir(parents=True)
    return path


def _copied(path: Path) -> GuestVolume:
    found = guest_volume(Mount(container_path="/v", host_path=str(path), readonly=True))
    assert found is not None and found.kind is VolumeKind.COPY
    return found


def _kubelet_file(volume: Path, key: str, data: str) -> None:
    data_dir = volume / "..2026_12_07"
    data_dir.mkdir(exist_ok=True)
    (data_dir / key).write_text(data)
    if not (volume / "..data").is_symlink():
        os.symlink("..2026_12_07", volume / "..data")
    os.symlink(f"..data/{key}", volume / key)


def test_symlinks_out_of_the_volume_copy_nothing_from_outside(tmp_path: Path) -> None:
    other = _volume(tmp_path, "uid-other", "token")
    (other / "token").write_text(SECRET)
    mine = _volume(tmp_path, "uid-mine", "token")
    _kubelet_file(mine, "ok", "mine\n")
    os.symlink("/etc/shadow", mine / "shadow")
    os.symlink("/etc", mine / "etc")
    os.symlink(str(other / "token"), mine / "absolute")
    os.symlink("../../../../uid-other/volumes/kubernetes.io~secret/token/token", mine / "relative")
    os.symlink("/proc/self/root/etc/shadow", mine / "magic")

    files = read_volume(_copied(mine)).files

    assert [(f.path, f.data) for f in files] == [("ok", b"mine\n")]


def test_fifo_and_device_nodes_are_never_opened_or_copied(tmp_path: Path) -> None:
    volume = _volume(tmp_path, "uid", "cm", "configmap")
    _kubelet_file(volume, "ok", "fine\n")
    os.mkfifo(volume / "fifo")  # an opener without O_NONBLOCK would wait for a writer forever
    if os.geteuid() == 0:
        os.mknod(volume / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        os.mknod(volume / "tty", stat.S_IFCHR | 0o600, os.makedev(5, 0))
    started = time.monotonic()

    files = read_volume(_copied(volume)).files

    assert time.monotonic() - started < 2
    assert [f.path for f in files] == ["ok"]


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    volume = _volume(tmp_path, "uid", "cm", "configmap")
    with open(volume / "huge", "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of holes
    started = time.monotonic()
    with pytest.raises(TooBig):
        read_volume(_copied(volume))
    assert time.monotonic() - started < 2


def test_files_past_the_byte_budget_together_are_refused(tmp_path: Path) -> None:
    volume = _volume(tmp_path, "uid", "cm", "configmap")
    for i in range(3):
        (volume / f"part{i}").write_bytes(b"x" * (MAX_BYTES // 2))
    with pytest.raises(TooBig):
        read_volume(_copied(volume))


def test_thousands_of_names_stop_at_the_entry_bound(tmp_path: Path) -> None:
    volume = _volume(tmp_path, "uid", "cm", "configmap")
    for i in range(5_000):
        os.close(os.open(volume / f"..hidden{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    started = time.monotonic()
    with pytest.raises(TooBig, match=f"more than {MAX_ENTRIES} names"):
        read_volume(_copied(volume))  # hidden names count too: the scan is what costs
    assert time.monotonic() - started < 2


def test_deep_nesting_and_symlink_loops_end(tmp_path: Path) -> None:
    volume = _volume(tmp_path, "uid", "cm", "configmap")
    os.symlink(".", volume / "loop")
    (volume / "f").write_text("once\n")
    files = read_volume(_copied(volume)).files
    assert [f.path for f in files] == ["f"]  # the loop's directory is read once

    deep = _volume(tmp_path, "uid", "deep", "configmap")
    where = deep
    for _ in range(40):
        where = where / "d"
    where.mkdir(parents=True)
    (where / "f").write_text("deep\n")
    with pytest.raises(TooBig, match="deeper"):
        read_volume(_copied(deep))


def test_a_volume_directory_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    """The volume's own directory replaced by a symlink to the host's /etc: opened
    O_NOFOLLOW, it is no directory, and nothing is read."""
    parent = tmp_path / "pods" / "uid" / "volumes" / "kubernetes.io~secret"
    parent.mkdir(parents=True)
    os.symlink("/etc", parent / "token")
    with pytest.raises(OSError):
        read_volume(_copied(parent / "token"))
    # An emptyDir swapped for a symlink to a tmpfs is not taken for a memory one.
    empty = tmp_path / "pods" / "uid" / "volumes" / "kubernetes.io~empty-dir"
    empty.mkdir(parents=True)
    os.symlink("/dev/shm", empty / "cache")
    found = guest_volume(Mount(container_path="/c", host_path=str(empty / "cache")))
    assert found is not None and found.kind is VolumeKind.EMPTY_DIR
