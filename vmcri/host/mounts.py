"""Mounting and unmounting on the host, through mount(2) and umount2(2).

The syscalls are called directly (ctypes) rather than through mount(8): no
fork per mount, and errors come back as errno values we can reason about.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vmcri.errors import HostCommandError
from vmcri.host import mount_api, mount_ns
from vmcri.host.imagevolumes import readonly_overlay_options
from vmcri.host.sized_fs import make_fs_image, make_sized_fs

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
UMOUNT_NOFOLLOW = 0x8
HARDENED = MS_NOSUID | MS_NODEV  # for mounts only the guest (never a host process) executes from
UNMOUNT_ROUNDS = 5  # a detach can uncover a mount stacked below it: go round until none is left

_libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class Mounter(Protocol):
    def overlay(self, lowerdirs: Sequence[str], upper: Path, work: Path, target: Path) -> None:
        """Mount an overlay; ``lowerdirs`` lowest first (as the image lists layers)."""
        ...

    def bind(
        self,
        source: Path,
        target: Path,
        readonly: bool = False,
        *,
        recursive_readonly: bool = False,
        follow_host: bool = False,
        namespace: Path | None = None,
    ) -> None:
        """Bind ``source`` and the mounts below it at ``target``.

        ``readonly`` makes the top mount read-only (mounts below keep their own
        flags), ``recursive_readonly`` every one of them. ``follow_host``: mounts
        the host makes below ``source`` later appear below ``target`` too (a slave
        of it, when ``source`` is a shared mount); otherwise none does. The flags
        are set before the mount is attached, so every copy propagation makes of it
        (a VM pod's share, virtiofsd's and QEMU's namespaces) has them. ``source``
        is looked up in the caller's mount namespace; ``namespace`` (a pin that
        :meth:`share_readonly` made): the bind is attached there, not here.
        """
        ...

    def share_readonly(self, source: Path, target: Path, namespace: Path) -> None:
        """Expose ``source`` at ``target`` read-only; later mounts below ``source`` follow,
        and so do mounts made below ``source`` in a new mount namespace pinned at
        ``namespace`` (see :mod:`vmcri.host.mount_ns`), which never reach the caller's.

        ``source`` becomes a shared mount point; the new namespace's copy of it a
        slave of it that is shared with its own peer group; ``target`` (there, and
        here until :meth:`release_share`) a read-only slave bind of that copy: what is
        mounted below ``source`` afterwards, here or there, appears below ``target``
        with its own flags, but the directories of ``source`` itself cannot be
        changed through ``target``.
        """
        ...

    def release_share(self, target: Path) -> None:
        """This namespace's ``target`` of :meth:`share_readonly` stops following: the
        copies made of it meanwhile (a file server's namespace) still do."""
        ...

    def sized_fs(self, image: Path, target: Path, size_mib: int) -> None:
        """Make a ``size_mib`` MiB file system in the file ``image`` and mount it at ``target``."""
        ...

    def fs_image(self, image: Path, size_mib: int) -> None:
        """Make a ``size_mib`` MiB file system in the file ``image``, mounted nowhere."""
        ...

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        """Mount image layers read-only at ``target``; ``lowerdirs`` lowest first."""
        ...

    def make_private(self, path: Path) -> None:
        """Make ``path`` a mount point whose sub-mounts propagate nowhere."""
        ...

    def unmount(self, target: Path) -> None:
        """Detach ``target``; not mounted is success."""
        ...

    def unmount_below(self, root: Path, namespace: Path | None = None) -> None:
        """Detach every mount at or below ``root`` and check none is left; in the mount
        namespace pinned at ``namespace`` when one is given. Only the outermost mounts are
        named (a lazy detach takes those below with it), so no path below one is walked:
        inside a volume or a rootfs, the guest may have swapped a directory for a symlink.

        Raises HostCommandError naming what is still mounted, so that a caller
        never deletes files through a mount it thought was gone.
        """
        ...


def _mount_attrs(flags: int) -> int:
    """``MS_*`` mount flags as the ``MOUNT_ATTR_*`` bits of mount_setattr(2)."""
    return (
        (mount_api.MOUNT_ATTR_RDONLY if flags & MS_RDONLY else 0)
        | (mount_api.MOUNT_ATTR_NOSUID if flags & MS_NOSUID else 0)
        | (mount_api.MOUNT_ATTR_NODEV if flags & MS_NODEV else 0)
    )


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    rc = _libc.mount(
        os.fsencode(source),
        os.fsencode(str(target)),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise HostCommandError(
            f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(err)}", returncode=err
        )


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def decode_mountinfo_path(field: bytes) -> bytes:
    """Undo the kernel's escaping of a mountinfo path: only ``\\ooo`` octal escapes exist.

    (The kernel escapes space, tab, newline and backslash; every other byte,
    UTF-8 or not, is written as it is.)
    """
    return _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def mount_points(root: Path) -> list[Path]:
    """Mount points at or below ``root``, in the calling thread's mount namespace (which
    may not be the process's: :mod:`vmcri.host.mount_ns`); stacked ones repeat."""
    prefix = os.fsencode(str(root)).rstrip(b"/")
    found: list[Path] = []
    with open("/proc/thread-self/mountinfo", "rb") as f:
        for line in f:
            target = decode_mountinfo_path(line.split(b" ")[4])
            if target == prefix or target.startswith(prefix + b"/"):
                found.append(Path(os.fsdecode(target)))
    return found


def _outermost(points: list[Path]) -> list[Path]:
    """The mount points of ``points`` with none of the others above them, once each."""
    found = set(points)
    return sorted(p for p in found if not any(a in found for a in p.parents))


class HostMounter:
    """The real thing. ``flags`` (e.g. :data:`HARDENED`) are added to every mount it makes."""

    def __init__(self, flags: int = 0) -> None:
        self._flags = flags

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
        _mount("overlay", target, "overlay", self._flags, data)

    def bind(
        self,
        source: Path,
        target: Path,
        readonly: bool = False,
        *,
        recursive_readonly: bool = False,
        follow_host: bool = False,
        namespace: Path | None = None,
    ) -> None:
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        everywhere = _mount_attrs(self._flags | (MS_RDONLY if recursive_readonly else 0))
        try:
            tree = mount_api.clone_tree(str(source), recursive=True)
        except OSError as exc:
            raise HostCommandError(
                f"open_tree {source}: {exc.strerror}", returncode=exc.errno or 0
            ) from exc
        try:
            mount_api.set_attributes(
                tree,
                recursive=True,
                attr_set=everywhere,
                propagation=MS_SLAVE if follow_host else MS_PRIVATE,
            )
            if readonly and not recursive_readonly:
                mount_api.set_attributes(
                    tree, recursive=False, attr_set=mount_api.MOUNT_ATTR_RDONLY
                )
            if namespace is None:
                mount_api.attach(tree, str(target))
            else:
                mount_ns.run_in(namespace, lambda: mount_api.attach(tree, str(target)))
        except OSError as exc:
            raise HostCommandError(
                f"bind {source} on {target}: {exc.strerror}", returncode=exc.errno or 0
            ) from exc
        finally:
            os.close(tree)

    def share_readonly(self, source: Path, target: Path, namespace: Path) -> None:
        for d in (source, target):
            d.mkdir(parents=True, exist_ok=True)
        namespace.touch(exist_ok=True)
        if source not in mount_points(source):
            _mount(str(source), source, None, MS_BIND)
            _mount("none", source, None, MS_BIND | MS_REMOUNT | HARDENED)
        _mount("none", source, None, MS_SHARED)

        def inside() -> int:
            # Nothing mounted in the new namespace reaches the host's ...
            _mount("none", Path("/"), None, MS_REC | MS_SLAVE)
            # ... but what is mounted below source there reaches its own peers' slaves.
            _mount("none", source, None, MS_SHARED)
            _mount(str(source), target, None, MS_BIND)
            _mount("none", target, None, MS_SLAVE)
            _mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | HARDENED)
            return mount_api.clone_tree(str(target), recursive=False)

        try:
            ns, tree = mount_ns.create(inside)
        except OSError as exc:
            raise HostCommandError(
                f"mount namespace for {source}: {exc.strerror}", returncode=exc.errno or 0
            ) from exc
        try:
            mount_api.attach(tree, str(target))  # a slave of the copy there, read-only
            _mount(f"/proc/self/fd/{ns}", namespace, None, MS_BIND)
            _mount("none", namespace, None, MS_BIND | MS_REMOUNT | HARDENED)
        except OSError as exc:
            raise HostCommandError(
                f"share {source} on {target}: {exc.strerror}", returncode=exc.errno or 0
            ) from exc
        finally:
            os.close(tree)
            os.close(ns)

    def release_share(self, target: Path) -> None:
        _mount("none", target, None, MS_PRIVATE)

    def sized_fs(self, image: Path, target: Path, size_mib: int) -> None:
        make_sized_fs(image, target, size_mib)

    def fs_image(self, image: Path, size_mib: int) -> None:
        make_fs_image(image, size_mib)

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        # Lower-only overlays are read-only by construction; one layer needs a bind.
        target.mkdir(parents=True, exist_ok=True)
        if len(lowerdirs) >= 2:
            _mount("overlay", target, "overlay", self._flags, readonly_overlay_options(lowerdirs))
        else:
            layer = Path(lowerdirs[0]) if lowerdirs else target
            self.bind(layer, target, readonly=True, recursive_readonly=True)

    def unmount(self, target: Path) -> None:
        rc = _libc.umount2(os.fsencode(str(target)), MNT_DETACH | UMOUNT_NOFOLLOW)
        if rc != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise HostCommandError(f"umount {target}: {os.strerror(err)}", returncode=err)

    def make_private(self, path: Path) -> None:
        """Make ``path`` a mount point whose sub-mounts propagate nowhere."""
        path.mkdir(parents=True, exist_ok=True)
        if path not in mount_points(path):
            _mount(str(path), path, None, MS_BIND)
        _mount("none", path, None, MS_PRIVATE)

    def unmount_below(self, root: Path, namespace: Path | None = None) -> None:
        if namespace is not None:
            try:
                mount_ns.run_in(namespace, lambda: self.unmount_below(root))
            except OSError as exc:
                raise HostCommandError(
                    f"umount below {root} in {namespace}: {exc.strerror}",
                    returncode=exc.errno or 0,
                ) from exc
            return
        for _ in range(UNMOUNT_ROUNDS):
            left = mount_points(root)
            if not left:
                return
            for target in _outermost(left):
                self.unmount(target)
        left = mount_points(root)
        if left:
            shown = ", ".join(str(p) for p in left[:5])
            raise HostCommandError(f"still mounted below {root} after unmounting: {shown}")
