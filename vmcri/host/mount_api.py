"""The new mount API of Linux 5.12+: ``open_tree``, ``mount_setattr``, ``move_mount``.

A mount made this way is built detached (a clone of a tree, in an anonymous mount
namespace), given its flags, propagation and ID mapping there, and only then attached:
every copy that propagation makes of it, in this namespace and in the namespaces that
are slaves of it, has those settings from the start. (A classic bind mount gets its
flags from a remount after it is attached, and that remount reaches no copy.)

Python has no wrappers for these calls, so they go through libc's ``syscall``; the
numbers are the same on every architecture (these calls are newer than the split
syscall tables). Every function raises OSError.
"""

from __future__ import annotations

import ctypes
import os

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
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


def _syscall(number: int, *args: object) -> int:
    rc = int(_libc.syscall(number, *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def clone_tree(source: str, *, recursive: bool) -> int:
    """A detached clone of the mount at ``source`` (and those below it): a file descriptor."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _syscall(
        SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), os.fsencode(source), ctypes.c_uint(flags)
    )


def set_attributes(
    tree: int,
    *,
    recursive: bool,
    attr_set: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
) -> None:
    """``mount_setattr`` on the mount ``tree`` refers to (and those below it if ``recursive``).

    ``propagation`` is ``MS_PRIVATE``, ``MS_SLAVE``, ``MS_SHARED`` or 0 (unchanged).
    """
    attr = _MountAttr(attr_set, 0, propagation, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _syscall(
        SYS_MOUNT_SETATTR,
        ctypes.c_int(tree),
        b"",
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


def attach(tree: int, target: str) -> None:
    """``move_mount`` the detached tree onto ``target`` (which must exist)."""
    _syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_int(tree),
        b"",
        ctypes.c_int(AT_FDCWD),
        os.fsencode(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
