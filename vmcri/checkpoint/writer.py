"""Writing a checkpoint: files 0600 in a 0700 directory of vmcri's own, all or nothing.

:class:`CheckpointWriter` makes :data:`~vmcri.checkpoint.paths.SUBDIR` under the
kubelet's directory (refusing one that is already there: a checkpoint is never
written over another), creates every file ``O_EXCL | O_NOFOLLOW`` relative to it,
and hashes what it writes. A file another process must write by path (libvirt saves a
domain to a path) is *adopted* afterwards: opened without following, checked to be a
regular file of ours, made 0600 and hashed. The manifest goes last, through a temporary
name and a rename, so a directory without ``manifest.json`` is never a checkpoint.
:meth:`abort` removes every file and the directory, whatever stage failed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable

from vmcri.checkpoint.manifest import FileEntry, Manifest, check_name
from vmcri.checkpoint.paths import MANIFEST, SUBDIR
from vmcri.errors import FailedPrecondition, InvalidArgument

_CHUNK = 1 << 20
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CheckpointWriter:
    def __init__(self, parent_fd: int, parent_path: str, field: str = "path") -> None:
        """Make the checkpoint directory under ``parent_fd`` (not closed here)."""
        self._parent_fd = parent_fd
        self.path = f"{parent_path.rstrip('/')}/{SUBDIR}"
        try:
            os.mkdir(SUBDIR, 0o700, dir_fd=parent_fd)
        except FileExistsError as exc:
            raise FailedPrecondition(
                f"{field}: {parent_path!r} already holds a checkpoint ({SUBDIR}); "
                "give an empty directory"
            ) from exc
        self._fd = os.open(
            SUBDIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
        )
        os.fchmod(self._fd, 0o700)  # whatever the umask made of it
        self._entries: dict[str, FileEntry] = {}
        self._closed = False

    def write(self, name: str, chunks: Callable[[], bytes]) -> FileEntry:
        """Create ``name`` (0600) and write what ``chunks`` returns until it returns b""."""
        check_name(name, "checkpoint file")
        digest = hashlib.sha256()
        size = 0
        fd = os.open(name, _NEW, 0o600, dir_fd=self._fd)
        try:
            while chunk := chunks():
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                digest.update(chunk)
                size += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return self._record(FileEntry(name, size, digest.hexdigest()))

    def write_bytes(self, name: str, data: bytes) -> FileEntry:
        parts = [data]
        return self.write(name, lambda: parts.pop() if parts else b"")

    def path_for(self, name: str) -> str:
        """The path another process (libvirtd) writes ``name`` to; adopt it afterwards."""
        return f"{self.path}/{check_name(name, 'checkpoint file')}"

    def adopt(self, name: str) -> FileEntry:
        """Take ``name``, written by another process, into the checkpoint."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise InvalidArgument(f"checkpoint file {name!r} is not a plain regular file")
            os.fchmod(fd, 0o600)
            digest = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        return self._record(FileEntry(name, size, digest.hexdigest()))

    def _record(self, entry: FileEntry) -> FileEntry:
        self._entries[entry.name] = entry
        return entry

    def files(self) -> tuple[FileEntry, ...]:
        return tuple(sorted(self._entries.values(), key=lambda e: e.name))

    def seal(self, manifest: Manifest) -> None:
        """Write the manifest (which must list :meth:`files`); the checkpoint is complete."""
        raw = manifest.encode()
        tmp = f".{MANIFEST}.tmp"
        fd = os.open(tmp, _NEW, 0o600, dir_fd=self._fd)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, MANIFEST, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        os.fsync(self._fd)
        self._close()

    def abort(self) -> None:
        """Remove every file and the directory; nothing of this checkpoint is left."""
        if self._closed:
            return
        _empty(self._fd)
        self._close()
        try:
            os.rmdir(SUBDIR, dir_fd=self._parent_fd)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove the directory ``name`` below ``parent_fd`` and all it holds; gone is success."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    try:
        _empty(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


def _empty(dir_fd: int) -> None:
    """Remove everything below ``dir_fd``, never following a symlink out of it."""
    for name in os.listdir(dir_fd):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    _empty(fd)
                finally:
                    os.close(fd)
                os.rmdir(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
