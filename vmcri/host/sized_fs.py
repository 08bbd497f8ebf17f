"""A directory with a size limit: an ext4 file system in a sparse file, on a loop device.

A VM pod's writable layers are written by QEMU or virtiofsd on the guest's
behalf, as root and outside any container's cgroup, so nothing but the file
system bounds them. Overlayfs has no quota of its own and project quotas
depend on how the host's file system was mounted; a per-pod file system works
on any host with loop devices and costs ~0.2 s (``mkfs.ext4`` without a
journal, lazily initialised inode tables; the file stays sparse). The guest
never sees the image file, only files inside the mounted file system, so its
metadata is only ever written by the host kernel.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vmcri.errors import HostCommandError

MKFS_TIMEOUT_S = 60.0


def make_sized_fs(image: Path, target: Path, size_mib: int) -> None:
    """Create ``image`` (``size_mib`` MiB, sparse) with ext4 and mount it at ``target``.

    Mounted ``nosuid,nodev`` through a loop device that goes away with the
    mount (``mount -o loop`` sets autoclear). Raises HostCommandError with the
    tool's message; leaves no image behind on failure.
    """
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_fs_image(image, size_mib)
    try:
        _run(["mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(target)])
        os.chmod(target, 0o700)
    except BaseException:
        image.unlink(missing_ok=True)
        raise


def make_fs_image(image: Path, size_mib: int) -> None:
    """Create ``image`` (``size_mib`` MiB, sparse) holding an empty ext4, mounted nowhere:
    a VM pod's writable disk, which only its guest mounts. Raises HostCommandError with
    the tool's message; leaves no image behind on failure."""
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size_mib << 20)
    finally:
        os.close(fd)
    try:
        _run(
            [
                "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                "-E", "nodiscard,lazy_itable_init=1,root_owner=0:0", str(image),
            ]
        )  # fmt: skip
    except BaseException:
        image.unlink(missing_ok=True)
        raise


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=MKFS_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostCommandError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise HostCommandError(f"{argv[0]} {argv[-1]}: {message}", returncode=done.returncode)
