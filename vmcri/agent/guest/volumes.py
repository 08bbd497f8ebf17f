"""SyncVolume: the pod's kubelet volumes that live in the guest instead of on the share.

The host decides which volumes qualify (``vmcri/handlers/vm/guest_volumes.py``); here the
guest makes them, per pod, keyed by the pod's name for the volume, so every container of
the pod that mounts it binds the same guest directory and a container's restart finds it
as it was; the pod's VM going away takes them with it::

    <scratch>/volumes/<name>/        an emptyDir (disk medium): on the pod's writable disk,
                                     so its size counts against the pod's disk
    <state>/empty-dirs/<name>/       an emptyDir (medium Memory): a tmpfs of its own
    <state>/volumes/                 a tmpfs the agent owns (nosuid, nodev), for copies:
        <name>/..data -> ..<gen>       a copied volume's files, swapped in atomically
        <name>/<key> -> ..data/<key>   each visible name, as kubelet's atomic writer lays it
        <name>                       or one file (the pod's /etc/hosts), written once

A copied volume is written into a new generation directory (only the agent writes below
``<state>/volumes``; containers bind it read-only), then the ``..data`` symlink is
replaced by rename: a reader sees the old files or the new ones, never a mix, exactly as
kubelet's own update on the host. The host's request is bounded in files, bytes, depth
and name shapes, and checked whole before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from vmcri.agent.guest.mounts import Mounter
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, HostCommandError, InvalidArgument

MAX_FILES = 64
MAX_BYTES = 900 * 1024  # below the frame's 1 MiB
MAX_DEPTH = 8
COPIES_TMPFS_BYTES = 64 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,200}$")
PART_RE = re.compile(r"^[^/\x00]{1,255}$")
DATA = "..data"
TERMINATION_PREFIX = "termination~"
MAX_TERMINATION = 4096
MS_NOSUID = 2
MS_NODEV = 4

Kind = agent_pb2.VolumeKind


class GuestVolumes:
    def __init__(
        self, state: Path, scratch: Path, mounter: Mounter, *, own_tmpfs: bool = True
    ) -> None:
        """``own_tmpfs``: mount a tmpfs on ``<state>/volumes`` (in a VM; a host test keeps
        the directory as it is)."""
        self.copies = state / "volumes"
        self.memory = state / "empty-dirs"
        self.disk = scratch / "volumes"
        self._mounter = mounter
        self._own_tmpfs = own_tmpfs
        self._lock = threading.Lock()

    def sync(self, req: agent_pb2.SyncVolumeRequest) -> agent_pb2.SyncVolumeResponse:
        """Make or update the volume; returns its guest path. Raises InvalidArgument (a
        field breaks its rule, named), HostCommandError (a mount or a write failed)."""
        _check(req)
        with self._lock:  # one writer: two generations never interleave
            try:
                path = self._sync(req)
            except OSError as exc:
                raise HostCommandError(f"volume {req.name}: {exc}") from exc
        return agent_pb2.SyncVolumeResponse(path=str(path))

    def _sync(self, req: agent_pb2.SyncVolumeRequest) -> Path:
        owner = req.files[0] if req.files else agent_pb2.VolumeFile(mode=0o777)
        if req.kind == Kind.VOLUME_KIND_EMPTY_DIR:
            path = self.disk / req.name
            if not path.is_dir():
                self.disk.mkdir(mode=0o755, parents=True, exist_ok=True)
                _make_dir(path, owner)
            return path
        if req.kind == Kind.VOLUME_KIND_EMPTY_DIR_MEMORY:
            path = self.memory / req.name
            if not self._mounter.is_mounted(str(path)):
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                size = min(req.size_bytes or _memory_bytes(), _memory_bytes())
                options = (
                    f"size={size},mode={owner.mode & 0o7777:o},uid={owner.uid},gid={owner.gid}"
                )
                self._mounter.mount("tmpfs", str(path), "tmpfs", MS_NOSUID | MS_NODEV, options)
            return path
        self._ensure_copies()
        path = self.copies / req.name
        if req.kind == Kind.VOLUME_KIND_FILE:
            if not path.is_file():
                _write_file(self.copies, req.name, req.files[0])
            return path
        _swap_in(path, req.files)
        return path

    def _ensure_copies(self) -> None:
        if self._own_tmpfs and not self._mounter.is_mounted(str(self.copies)):
            self.copies.mkdir(mode=0o755, parents=True, exist_ok=True)
            options = f"size={COPIES_TMPFS_BYTES},mode=755"
            self._mounter.mount("tmpfs", str(self.copies), "tmpfs", MS_NOSUID | MS_NODEV, options)
        self.copies.mkdir(mode=0o755, parents=True, exist_ok=True)


def termination_log_of(spec: dict[str, object], copies: Path) -> str:
    """The guest file bound as the container's termination-log (a FILE volume named
    ``termination~...`` below ``copies``), or ""."""
    mounts = spec.get("mounts")
    for mount in mounts if isinstance(mounts, list) else ():
        source = mount.get("source") if isinstance(mount, dict) else None
        if (
            isinstance(source, str)
            and os.path.dirname(source) == str(copies)
            and os.path.basename(source).startswith(TERMINATION_PREFIX)
        ):
            return source
    return ""


def read_termination_message(path: str) -> bytes:
    """The last MAX_TERMINATION bytes of the container's termination-log (as kubelet
    reads it); b"" when there is none. The container could have replaced the file with
    anything: opened O_NOFOLLOW|O_NONBLOCK and read only if regular."""
    if not path:
        return b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b""
        os.lseek(fd, max(0, st.st_size - MAX_TERMINATION), os.SEEK_SET)
        return os.read(fd, MAX_TERMINATION)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _check(req: agent_pb2.SyncVolumeRequest) -> None:
    if not NAME_RE.match(req.name) or ".." in req.name:
        raise InvalidArgument(f"sync_volume.name {req.name[:80]!r} is not a valid volume name")
    if req.kind not in (
        Kind.VOLUME_KIND_EMPTY_DIR,
        Kind.VOLUME_KIND_EMPTY_DIR_MEMORY,
        Kind.VOLUME_KIND_COPY,
        Kind.VOLUME_KIND_FILE,
    ):
        raise InvalidArgument(f"sync_volume.kind {req.kind} is not known")
    if len(req.files) > MAX_FILES:
        raise InvalidArgument(f"sync_volume.files: more than {MAX_FILES}")
    if sum(len(f.data) for f in req.files) > MAX_BYTES:
        raise InvalidArgument(f"sync_volume.files: more than {MAX_BYTES} bytes")
    if req.kind == Kind.VOLUME_KIND_FILE and len(req.files) != 1:
        raise InvalidArgument("sync_volume.files: a FILE volume has exactly one file")
    if req.kind != Kind.VOLUME_KIND_COPY:
        if any(f.path for f in req.files) or len(req.files) > 1:
            raise InvalidArgument("sync_volume.files: only a COPY volume has paths")
        return
    seen: set[str] = set()
    dirs: set[str] = set()
    for f in req.files:
        parts = f.path.split("/")
        if len(parts) > MAX_DEPTH or any(
            not PART_RE.match(p) or p in (".", "..") or p.startswith("..") for p in parts
        ):
            raise InvalidArgument(f"sync_volume.files: path {f.path[:200]!r} is not allowed")
        if f.path in seen or f.path in dirs:
            raise InvalidArgument(f"sync_volume.files: path {f.path[:200]!r} is given twice")
        seen.add(f.path)
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    if seen & dirs:
        raise InvalidArgument("sync_volume.files: a path is both a file and a directory")


def _swap_in(path: Path, files: Sequence[agent_pb2.VolumeFile]) -> None:
    """Write ``files`` as a new generation below ``path`` and switch ``..data`` to it."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        gen = f"..{time.time_ns()}"
        os.mkdir(gen, 0o755, dir_fd=fd)
        gen_fd = os.open(gen, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            for f in files:
                *parents, leaf = f.path.split("/")
                dir_fd = _make_parents(gen_fd, parents)
                try:
                    _write_at(dir_fd, leaf, f)
                finally:
                    if dir_fd != gen_fd:
                        os.close(dir_fd)
        finally:
            os.close(gen_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("..data_tmp", dir_fd=fd)
        os.symlink(gen, "..data_tmp", dir_fd=fd)
        os.rename("..data_tmp", DATA, src_dir_fd=fd, dst_dir_fd=fd)
        visible = {f.path.split("/")[0] for f in files}
        for name in os.listdir(fd):
            if name.startswith(".."):
                if name not in (gen, DATA):
                    _remove_at(fd, name)
            elif name not in visible:
                _remove_at(fd, name)
        for name in visible:
            try:
                if os.readlink(name, dir_fd=fd) == f"{DATA}/{name}":
                    continue
            except OSError:
                pass
            os.symlink(f"{DATA}/{name}", f"..{name}.tmp"[:250], dir_fd=fd)
            os.rename(f"..{name}.tmp"[:250], name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _make_parents(top: int, parents: list[str]) -> int:
    fd = top
    for part in parents:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o755, dir_fd=fd)
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        if fd != top:
            os.close(fd)
        fd = nxt
    return fd


def _write_at(dir_fd: int, name: str, f: agent_pb2.VolumeFile) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(f.data)
        while view:
            view = view[os.write(out, view) :]
        os.fchown(out, f.uid, f.gid)
        os.fchmod(out, f.mode & 0o777)
    finally:
        os.close(out)


def _write_file(parent: Path, name: str, f: agent_pb2.VolumeFile) -> None:
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"..{name}.tmp", dir_fd=fd)
        _write_at(fd, f"..{name}.tmp", f)
        os.rename(f"..{name}.tmp", name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _make_dir(path: Path, owner: agent_pb2.VolumeFile) -> None:
    path.mkdir(mode=0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, owner.mode & 0o7777)
    finally:
        os.close(fd)


def _remove_at(dir_fd: int, name: str) -> None:
    st = os.lstat(name, dir_fd=dir_fd)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    raise FailedPrecondition("cannot read the guest's memory size")
