"""User namespace ID maps and ID-mapped mounts, through the raw syscalls.

A pod with its own user namespace sees files through an ID-mapped mount: the
kernel shifts each file's owner by the namespace's mapping on the way in and
out, so image layers shared by every pod on the node need no chown-ed copy.
This is the mount API of Linux 5.12+ (``open_tree`` to clone a mount,
``mount_setattr`` with ``MOUNT_ATTR_IDMAP`` to attach a user namespace,
``move_mount`` to put the clone somewhere); overlayfs takes ID-mapped lower
layers since 5.19. runc 1.1 cannot make such mounts itself, so vmcri makes
them on the host and hands runc plain paths.

Python has no wrappers for these calls, so they go through libc's ``syscall``.
The numbers are the same on every architecture: these calls are newer than the
split syscall tables.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmcri.errors import FailedPrecondition, HostCommandError

if TYPE_CHECKING:  # the pod helper imports this module: keep its start-up light
    from vmcri.model import IDMapping

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000

_libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def id_map_text(mappings: Sequence[IDMapping]) -> str:
    """The contents of /proc/<pid>/uid_map (or gid_map): ``inside outside length`` lines."""
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings)


def write_id_maps(pid: int, uids: Sequence[IDMapping], gids: Sequence[IDMapping]) -> None:
    """Give the user namespace of ``pid`` its mappings (each file takes one write).

    Only a process privileged in the parent namespace may write several ranges
    or ranges it does not own itself: the daemon does it for the pod's helper.
    Raises HostCommandError.
    """
    for name, mappings in (("uid_map", uids), ("gid_map", gids)):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, id_map_text(mappings).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise HostCommandError(f"write {path}: {exc.strerror}", returncode=exc.errno) from exc


def _syscall(number: int, *args: object) -> int:
    rc = int(_libc.syscall(number, *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def idmapped_mount(source: str, target: str, userns_path: str, *, recursive: bool) -> None:
    """Mount ``source`` at ``target`` (which must exist) seen through ``userns_path``'s maps.

    A file owned by ID ``n`` on disk appears owned by whatever ``n`` maps to in
    that namespace, so a pod's root (host ID 100000, say) owns what the image
    says root owns. ``recursive`` takes the mounts below ``source`` along.
    Raises FailedPrecondition when the file system or kernel cannot do it (the
    message says which), HostCommandError for anything else.
    """
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    try:
        tree = _syscall(
            SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), source.encode(), ctypes.c_uint(flags)
        )
    except OSError as exc:
        raise _error("open_tree", source, exc) from exc
    try:
        userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns)
            setattr_flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
            _syscall(
                SYS_MOUNT_SETATTR,
                ctypes.c_int(tree),
                b"",
                ctypes.c_uint(setattr_flags),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
        except OSError as exc:
            raise _error("mount_setattr", source, exc) from exc
        finally:
            os.close(userns)
        try:
            _syscall(
                SYS_MOVE_MOUNT,
                ctypes.c_int(tree),
                b"",
                ctypes.c_int(AT_FDCWD),
                target.encode(),
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
            )
        except OSError as exc:
            raise _error("move_mount", target, exc) from exc
    finally:
        os.close(tree)


def _error(call: str, path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOSYS:
        return FailedPrecondition(
            f"{path}: this kernel has no {call}(2); user namespaces need Linux 5.19 or newer"
        )
    if call == "mount_setattr" and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
        return FailedPrecondition(
            f"{path}: its file system cannot be ID-mapped, which a pod with its own user "
            "namespace needs for every mount"
        )
    return HostCommandError(f"{call} {path}: {exc.strerror}", returncode=exc.errno or 0)
