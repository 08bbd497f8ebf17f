"""Reading a checkpoint: nothing is used before all of it was checked.

:func:`verify` opens :data:`~vmcri.checkpoint.paths.SUBDIR` under the kubelet's
directory without following symlinks, reads the manifest within its bound, and then
checks the directory against it: no entry the manifest does not list, and every listed
file a regular file with one link (a hard link could pull a host file in), opened
``O_NOFOLLOW``, of exactly its size, whose SHA-256 matches. Only then is a
:class:`VerifiedCheckpoint` returned, which hands out the files by name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import MAX_MANIFEST_BYTES, Manifest, decode
from vmcri.checkpoint.paths import MANIFEST, SUBDIR, open_subdirectory
from vmcri.errors import InvalidArgument

_CHUNK = 1 << 20
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose manifest and every file were checked; owns ``dir_fd``."""

    manifest: Manifest
    dir_fd: int
    path: str  # the checkpoint directory, for a process that must open a file by path

    @contextmanager
    def open(self, name: str) -> Iterator[int]:
        """A read descriptor of the listed file ``name``."""
        self.manifest.file(name)
        fd = os.open(name, _READ, dir_fd=self.dir_fd)
        try:
            yield fd
        finally:
            os.close(fd)

    def read(self, name: str) -> bytes:
        entry = self.manifest.file(name)
        with self.open(name) as fd:
            return _read_exactly(fd, entry.size, name)

    def path_of(self, name: str) -> str:
        self.manifest.file(name)
        return f"{self.path}/{name}"

    def close(self) -> None:
        os.close(self.dir_fd)


def verify(
    parent_fd: int, parent_path: str, deadline: Deadline, field: str = "path"
) -> VerifiedCheckpoint:
    """The checkpoint under ``parent_fd``; raises InvalidArgument naming ``field`` and what is
    wrong, DeadlineExceeded when checking outlasts the call."""
    dir_fd = open_subdirectory(parent_fd, SUBDIR, field)
    try:
        manifest = decode(_read_manifest(dir_fd, field), field)
        listed = {entry.name for entry in manifest.files}
        for name in os.listdir(dir_fd):
            if name != MANIFEST and name not in listed:
                raise InvalidArgument(
                    f"{field}: the checkpoint holds {name[:64]!r}, which its manifest does not list"
                )
        for entry in manifest.files:
            deadline.check(f"checking checkpoint file {entry.name}")
            _check_file(dir_fd, entry.name, entry.size, entry.sha256, deadline, field)
    except BaseException:
        os.close(dir_fd)
        raise
    return VerifiedCheckpoint(manifest, dir_fd, f"{parent_path.rstrip('/')}/{SUBDIR}")


def _open_regular(dir_fd: int, name: str, field: str) -> int:
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError as exc:
        raise InvalidArgument(
            f"{field}: checkpoint file {name!r} cannot be opened ({exc.strerror}; "
            "a symlink is refused)"
        ) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise InvalidArgument(f"{field}: checkpoint file {name!r} is not a plain regular file")
    return fd


def _read_manifest(dir_fd: int, field: str) -> bytes:
    fd = _open_regular(dir_fd, MANIFEST, field)
    try:
        raw = _read_at_most(fd, MAX_MANIFEST_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"{field}: checkpoint manifest is larger than {MAX_MANIFEST_BYTES}")
    return raw


def _check_file(
    dir_fd: int, name: str, size: int, sha256: str, deadline: Deadline, field: str
) -> None:
    fd = _open_regular(dir_fd, name, field)
    try:
        if os.fstat(fd).st_size != size:
            raise InvalidArgument(
                f"{field}: checkpoint file {name!r} is {os.fstat(fd).st_size} bytes, "
                f"its manifest says {size} (truncated or altered)"
            )
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
            deadline.check(f"checking checkpoint file {name}")
        if left or os.read(fd, 1) or digest.hexdigest() != sha256:
            raise InvalidArgument(
                f"{field}: checkpoint file {name!r} does not match its SHA-256 in the manifest"
            )
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_exactly(fd: int, size: int, name: str) -> bytes:
    data = _read_at_most(fd, size + 1)
    if len(data) != size:
        raise InvalidArgument(f"path: checkpoint file {name!r} changed after it was checked")
    return data
