"""Where a checkpoint may be written or read: a directory the kubelet owns, and only there.

The daemon runs as root, so a path in a request is opened the one way that cannot be
steered: ``O_DIRECTORY | O_NOFOLLOW`` on the path the kubelet gave (a symlink, a file,
a missing path are refused naming the field), and everything below it relative to that
descriptor, never by a path string again. vmcri writes its files in one subdirectory
of its own (:data:`SUBDIR`, mode 0700), so a failed checkpoint is removed by removing
what that subdirectory holds, and nothing the kubelet keeps beside it is touched.
"""

from __future__ import annotations

import errno
import os
import stat

from vmcri.errors import InvalidArgument

SUBDIR = "vmcri-checkpoint"
"""The directory vmcri writes under the kubelet's ``path`` (0700)."""
MANIFEST = "manifest.json"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_directory(path: str, field: str) -> int:
    """A descriptor of the existing directory ``path``; the caller closes it.

    Raises InvalidArgument naming ``field`` when ``path`` is relative, missing, not a
    directory, or a symlink (its last component: the kubelet's own tree above it is
    trusted as the kubelet is).
    """
    if not path.startswith("/"):
        raise InvalidArgument(f"{field}: {path!r} must be an absolute path")
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise InvalidArgument(f"{field}: {path!r} {_why(exc)}") from exc
    if not stat.S_ISDIR(os.fstat(fd).st_mode):  # O_DIRECTORY already says so; kept as a guard
        os.close(fd)
        raise InvalidArgument(f"{field}: {path!r} is not a directory")
    return fd


def open_subdirectory(parent_fd: int, name: str, field: str) -> int:
    """``name`` below ``parent_fd``, not followed if it is a symlink; InvalidArgument else."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise InvalidArgument(f"{field}: {name!r} {_why(exc)}") from exc


def split_location(location: str, field: str) -> tuple[int, str]:
    """The parent directory (a descriptor) and the file name of an archive to create."""
    parent, _, name = location.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise InvalidArgument(f"{field}: {location!r} does not name a file")
    return open_directory(parent or "/", field), name


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist (it must be an existing directory)"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "is not a directory (a symlink is refused)"
    if exc.errno == errno.EACCES:
        return "cannot be opened (permission denied)"
    return f"cannot be opened: {exc.strerror}"
