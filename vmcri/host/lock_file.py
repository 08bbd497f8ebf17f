"""Lock files no other user can open, so no other user can hold their lock.

``flock(2)`` needs only an open descriptor, and a shared lock needs only read access:
a lock file readable by everyone (0644, as ``open(path, "a+")`` made ``vmcri.lock``)
let ``nobody`` take a shared lock and hold it, and the restarted daemon refused to
start ("in use by another vmcri daemon"). So a lock file here is

* in a directory of its own owner's, mode 0700 (nobody else can reach the file, nor
  replace the directory: it is opened without following a symlink and checked);
* opened with ``O_NOFOLLOW`` relative to that directory's descriptor, created 0600,
  checked to be a regular file of the caller's, and set to 0600 if it was not.

A descriptor someone opened before the file was private keeps working, so a daemon's
lock lives in a directory of its own (``<state>/lock/``), new with this scheme.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _private_dir(directory: Path, mode: int | None) -> int:
    """A descriptor of ``directory`` (made if missing), checked to be the caller's own."""
    directory.mkdir(parents=True, exist_ok=True, mode=mode if mode is not None else 0o755)
    # A directory of the lock's own is never a symlink; one the operator configured (the
    # VM templates') may be, as any configured path may.
    nofollow = os.O_NOFOLLOW if mode is not None else 0
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | nofollow | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{directory} is owned by uid {st.st_uid}, not by us")
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_lock_file(path: Path, *, dir_mode: int | None = DIR_MODE) -> int:
    """An O_RDWR descriptor of the lock file ``path``, private to the caller (see above).

    ``dir_mode`` None leaves the directory alone (its mode, and a symlink to it: the VM
    templates' directory is the operator's to place); the file is still 0600 and not a
    symlink.
    Raises OSError (PermissionError when the directory or file is someone else's, or
    the file is not a regular file; ELOOP when it is a symlink).
    """
    dir_fd = _private_dir(path.parent, dir_mode)
    try:
        fd = os.open(
            path.name,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            FILE_MODE,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(f"{path} is not a regular file of ours")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
