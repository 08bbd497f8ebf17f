"""Open files in trees that someone else can write, without following their symlinks.

A container's rootfs (and, in a VM pod, everything the guest can write through
the pod share) is hostile: a name the host opens there may be a symlink to a
host file, a FIFO that blocks the opener forever, or a directory swapped for a
symlink between a check and the open. ``openat2(2)`` resolves a whole path
inside a directory file descriptor in the kernel, in one step, so none of that
can be raced: ``RESOLVE_IN_ROOT`` treats the directory as ``/`` (an image's
absolute symlinks stay inside it), ``RESOLVE_NO_MAGICLINKS`` refuses
``/proc/self/fd``-style jumps, ``RESOLVE_NO_XDEV`` refuses to cross into
another mount. Files are opened ``O_NONBLOCK`` and checked to be regular before
a byte is read, and reads are bounded.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

SYS_OPENAT2 = 437  # the same number on every architecture (new syscalls share one table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """The ``openat2(2)`` system call; returns a file descriptor. Raises OSError."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: {path!r}")
    return int(fd)


def read_regular_file(root: str, path: str, limit: int, resolve: int = IN_ROOT) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path`` inside ``root``.

    ``path`` is resolved inside ``root`` as ``resolve`` says (by default as if
    ``root`` were ``/``). Returns None when there is no such file, or when it
    is not a regular file (a FIFO, a device, a directory), or when resolving it
    would leave ``root``. Raises OSError only for ``root`` itself.
    """
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = openat2(root_fd, path.lstrip("/") or ".", os.O_RDONLY | os.O_NONBLOCK, resolve)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV, errno.EACCES):
                return None
            raise
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_at_most(fd, limit)
    finally:
        os.close(fd)


def read_at_most(fd: int, limit: int) -> bytes:
    """The next ``limit`` bytes of ``fd`` at most (fewer at its end)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
