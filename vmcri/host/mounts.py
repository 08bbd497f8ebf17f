"""Mounting and unmounting on the host, through mount(2) and umount2(2).

The syscalls are called directly (ctypes) rather than through mount(8): no
fork per mount, and errors come back as errno values we can reason about.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vmcri.errors import HostCommandError
from vmcri.host.imagevolumes import readonly_overlay_options

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class Mounter(Protocol):
    def overlay(self, lowerdirs: Sequence[str], upper: Path, work: Path, target: Path) -> None:
        """Mount an overlay; ``lowerdirs`` lowest first (as the image lists layers)."""
        ...

    def bind(self, source: Path, target: Path, readonly: bool = False) -> None: ...

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        """Mount image layers read-only at ``target``; ``lowerdirs`` lowest first."""
        ...

    def make_shared(self, path: Path) -> None:
        """Make ``path`` a mount point whose later sub-mounts propagate to slaves."""
        ...

    def unmount(self, target: Path) -> None:
        """Detach ``target``; not mounted is success."""
        ...

    def unmount_below(self, root: Path) -> None:
        """Detach every mount at or below ``root``, deepest first."""
        ...


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    rc = _libc.mount(
        source.encode(),
        str(target).encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise HostCommandError(
            f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}", returncode=err
        )


def mount_points(root: Path) -> list[Path]:
    """Mount points at or below ``root``, from /proc/self/mountinfo."""
    prefix = str(root).rstrip("/")
    found: list[Path] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(Path(target))
    return found


class HostMounter:
    """The real thing."""

    def overlay(self, lowerdirs: Sequence[str], upper: Path, work: Path, target: Path) -> None:
        if not lowerdirs:
            raise HostCommandError("overlay needs at least one lower directory")
        for d in (upper, work, target):
            d.mkdir(parents=True, exist_ok=True)
        # overlayfs lists lower layers uppermost first.
        lower = ":".join(reversed(list(lowerdirs)))
        data = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if len(data) >= 4096:
            raise HostCommandError(f"overlay options too long for one page ({len(data)} bytes)")
        _mount("overlay", target, "overlay", 0, data)

    def bind(self, source: Path, target: Path, readonly: bool = False) -> None:
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        _mount(str(source), target, None, MS_BIND | MS_REC)
        if readonly:
            _mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        # Lower-only overlays are read-only by construction; one layer needs a bind.
        target.mkdir(parents=True, exist_ok=True)
        if len(lowerdirs) >= 2:
            _mount("overlay", target, "overlay", 0, readonly_overlay_options(lowerdirs))
        else:
            self.bind(Path(lowerdirs[0]) if lowerdirs else target, target, readonly=True)

    def make_shared(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if path not in mount_points(path):
            _mount(str(path), path, None, MS_BIND)
        _mount("none", path, None, MS_SHARED)

    def unmount(self, target: Path) -> None:
        rc = _libc.umount2(str(target).encode(), MNT_DETACH)
        if rc != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise HostCommandError(f"umount {target}: {os.strerror(err)}", returncode=err)

    def unmount_below(self, root: Path) -> None:
        for target in sorted(mount_points(root), key=lambda p: len(p.parts), reverse=True):
            self.unmount(target)
