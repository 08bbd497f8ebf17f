"""Which of kubelet's volumes live in a VM pod's guest, and the host's bounded read of them.

As Kata does, the share is kept for what must stay the host's (hostPath, persistent
volumes, image volumes, anything too big): every other kubelet volume lives in the guest,
where it is as fast as the guest's own disk or memory, and does not keep the pod from
being saved (QEMU blocks migration while a 9p export is mounted). kubelet's host path
says which volume it is (``<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>``):

* ``empty-dir``: made in the guest per pod (``vmcri/agent/guest/volumes.py``), on the
  pod's writable disk, or a tmpfs when kubelet made a tmpfs on the host (medium Memory,
  seen with ``fstatfs`` on a descriptor of the directory itself, opened ``O_PATH|
  O_NOFOLLOW``; its size is kubelet's). Nothing of it is on the host: kubelet's
  directory stays empty, and the pod's files go with its VM.
* ``configmap``, ``secret``, ``projected``, ``downward-api`` mounted read-only: copied
  in when the copy is small (:data:`MAX_FILES` files, :data:`MAX_BYTES` bytes, at most
  :data:`MAX_DEPTH` deep, :data:`MAX_ENTRIES` names looked at), and again on every
  change (``volume_sync.py``); a bigger one stays on the share.
* the pod's ``etc-hosts`` file (kubelet's /etc/hosts, mounted writable): copied once into a
  guest file per pod (kubelet writes it when the pod starts, never later); what a container
  writes to it stays in the guest, as it would stay in the pod's host file.
* a container's termination-log (``<root>/pods/<uid>/containers/<name>/<id>``, writable):
  a guest file per container; when the container ends, the agent sends the file's last
  4096 bytes in its exit event, and the host writes them to kubelet's file
  (``vmcri/supervisor/termination.py``), where kubelet reads the message.

What stays on the share: every other host path, a volume kubelet asks to propagate
(HostToContainer: a copy cannot follow later host mounts), a writable configMap-like
volume.

The host reads a volume's files through descriptors only: the volume directory is opened
``O_NOFOLLOW``, each visible name is resolved by ``openat2`` beneath it
(``RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV``: kubelet's ``key -> ..data/key``
symlinks resolve, one to ``/etc/shadow`` or to another pod's directory does not) as
``O_PATH``, so a FIFO or a device is never opened, only a regular file is reopened for
reading, and no read goes past the volume's byte budget.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from vmcri.agent.types import VolumeFile, VolumeKind
from vmcri.host.safe_open import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_XDEV,
    openat2,
    read_at_most,
)
from vmcri.model import Mount, MountPropagation

MAX_FILES = 16
MAX_BYTES = 512 * 1024
MAX_DEPTH = 4
MAX_ENTRIES = 64  # names looked at, skipped ones too: a directory of 10,000 stops early
TMPFS_MAGIC = 0x01021994
BENEATH = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
COPIED_PLUGINS = ("configmap", "secret", "projected", "downward-api")

_VOLUME = re.compile(r"/pods/[^/]+/volumes/kubernetes\.io~([a-z-]+)/([^/]+)$")
_ETC_HOSTS = re.compile(r"/pods/[^/]+/etc-hosts$")
_TERMINATION = re.compile(r"/pods/[^/]+/containers/([a-z0-9][a-z0-9-]{0,62})/([0-9a-f]{1,64})$")


class TooBig(Exception):
    """The volume is past a bound: it stays on the share (or keeps its last copy)."""


@dataclass(frozen=True)
class GuestVolume:
    """One of kubelet's volumes as the guest keeps it: ``name`` is the pod's name for it
    (the same for every container of the pod that mounts it, and for the pod restored
    from a checkpoint)."""

    name: str
    kind: VolumeKind
    host_path: str


def guest_volume(mount: Mount) -> GuestVolume | None:
    """The guest-local form of ``mount``, or None when it stays on the share. Reads nothing
    but kubelet's path (and, for an emptyDir, the file system it is on)."""
    if mount.image or mount.propagation is not MountPropagation.PRIVATE:
        return None
    path = os.path.normpath(mount.host_path)
    if _ETC_HOSTS.search(path):
        return GuestVolume("etc-hosts", VolumeKind.FILE, path)
    termination = _TERMINATION.search(path)
    if termination is not None and not mount.readonly:
        name, instance = termination.groups()
        return GuestVolume(f"termination~{name}~{instance}", VolumeKind.FILE, path)
    found = _VOLUME.search(path)
    if found is None:
        return None
    plugin, volume = found.groups()
    name = f"{plugin}~{volume}"
    if plugin == "empty-dir":
        memory = _fs_type(path) == TMPFS_MAGIC
        kind = VolumeKind.EMPTY_DIR_MEMORY if memory else VolumeKind.EMPTY_DIR
        return GuestVolume(name, kind, path)
    if plugin in COPIED_PLUGINS and mount.readonly:
        return GuestVolume(name, VolumeKind.COPY, path)
    return None


@dataclass(frozen=True)
class Snapshot:
    """What the host read of a volume: the files to send, and their digest (a change)."""

    files: tuple[VolumeFile, ...]
    size_bytes: int = 0

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.path}\0{f.mode}\0{f.uid}\0{f.gid}\0{len(f.data)}\0".encode())
            h.update(f.data)
        h.update(str(self.size_bytes).encode())
        return h.hexdigest()


def read_volume(volume: GuestVolume) -> Snapshot:
    """Read what the guest needs of ``volume``. Raises TooBig (past a bound), OSError (the
    host path is gone or not of its kind)."""
    root = os.open(volume.host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(root)
        owner = VolumeFile("", b"", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if volume.kind is VolumeKind.EMPTY_DIR:
            return Snapshot((owner,))
        if volume.kind is VolumeKind.EMPTY_DIR_MEMORY:
            vfs = os.fstatvfs(root)
            return Snapshot((owner,), vfs.f_blocks * vfs.f_frsize)
        if volume.kind is VolumeKind.FILE:
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, f"{volume.host_path}: not a regular file")
            data = _read(root, MAX_BYTES)
            return Snapshot((VolumeFile("", data, owner.mode, owner.uid, owner.gid),))
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"{volume.host_path}: not a directory")
        walk = _Walk(root)
        walk.dir("", 0)
        return Snapshot(tuple(sorted(walk.files, key=lambda f: f.path)))
    finally:
        os.close(root)


class _Walk:
    def __init__(self, root: int) -> None:
        self.root = root
        self.files: list[VolumeFile] = []
        self.bytes = 0
        self.entries = 0
        self.seen: set[tuple[int, int]] = set()

    def dir(self, rel: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise TooBig(f"deeper than {MAX_DEPTH}")
        fd = openat2(self.root, rel or ".", os.O_RDONLY | os.O_DIRECTORY, BENEATH)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in self.seen:
                return  # a symlink back up: its files are (being) read once already
            self.seen.add((st.st_dev, st.st_ino))
            with os.scandir(fd) as names:
                listed = []
                for entry in names:
                    self.entries += 1
                    if self.entries > MAX_ENTRIES:
                        raise TooBig(f"more than {MAX_ENTRIES} names")
                    if not entry.name.startswith(".."):  # kubelet's ..data and its dirs
                        listed.append(entry.name)
        finally:
            os.close(fd)
        for name in sorted(listed):
            self.entry(f"{rel}/{name}" if rel else name, depth)

    def entry(self, rel: str, depth: int) -> None:
        try:
            fd = openat2(self.root, rel, os.O_PATH, BENEATH)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.ELOOP, errno.ENOENT, errno.EACCES):
                return  # a symlink out of the volume (or gone): nothing of it is copied
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                self.dir(rel, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                if len(self.files) >= MAX_FILES:
                    raise TooBig(f"more than {MAX_FILES} files")
                if self.bytes + st.st_size > MAX_BYTES:
                    raise TooBig(f"more than {MAX_BYTES} bytes")
                data = _read(fd, MAX_BYTES - self.bytes)
                self.bytes += len(data)
                mode = stat.S_IMODE(st.st_mode) & 0o777
                self.files.append(VolumeFile(rel, data, mode, st.st_uid, st.st_gid))
            # a FIFO, socket or device node: never opened, never copied
        finally:
            os.close(fd)


def _read(path_fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file behind an ``O_PATH`` descriptor,
    reopened through it (the inode already checked, so no FIFO or device is opened)."""
    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = read_at_most(fd, limit + 1)
        if len(data) > limit:
            raise TooBig(f"a file grew past {MAX_BYTES} bytes")
        return data
    finally:
        os.close(fd)


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def _fs_type(path: str) -> int:
    """The magic number of the file system ``path`` itself is on (not followed), 0 if
    unknown."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        buf = _Statfs()
        if libc.fstatfs(fd, ctypes.byref(buf)) != 0:
            return 0
        return int(buf.f_type)
    finally:
        os.close(fd)
