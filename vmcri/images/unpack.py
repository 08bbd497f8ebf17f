"""Unpack one untrusted layer into an overlay-ready directory, safely.

The tar is parsed with :mod:`tarfile`, but nothing is extracted by it: every
entry is created here, relative to directory file descriptors opened with
``O_NOFOLLOW`` from the layer root, so no entry can be written outside it
whatever the archive holds. The rules:

* Names are cleaned: a leading ``/`` is dropped (GNU tar does the same); a
  ``..`` that would climb above the root fails the layer (``UnsafeContent``).
* A symlink in the *parent path* of a later entry is followed the way the
  container will see it: resolved inside the image's root filesystem (this
  layer over the lower layers already unpacked), never on the host. So
  ``lib -> /usr/lib`` then ``lib/x`` writes ``usr/lib/x`` in this layer, and
  ``evil -> /etc`` then ``evil/passwd`` writes the image's ``etc/passwd``.
* A hard link must name a non-directory inside the image; one only found in a
  lower layer is copied up first (the link must live in this layer's directory).
  Resolution lives in ``merged_view.py``, directory fds in ``layer_dirs.py``.
* Character and block devices are refused: layer directories are shared into
  VMs over 9p/virtiofs, where a device node would let the guest open a *host*
  device. FIFOs are created. (The OCI image spec allows devices; refusing them
  is a deliberate, documented restriction.)
* Ownership (numeric uid/gid) and mode, setuid/setgid/sticky included, are kept
  when running as root, as the OCI image spec asks; ``chmod`` comes after
  ``chown`` so the kernel does not clear setuid bits.
* Extended attributes: ``user.*`` and ``security.capability`` are kept;
  ``trusted.*`` (which would forge overlayfs metadata) and the rest are dropped.
* OCI whiteouts become overlayfs ones: ``.wh.<name>`` is a 0:0 character
  device ``<name>``; ``.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on its
  directory.
* FIFOs and symlinks get no extended attributes, and no open during the unpack
  can block or follow a symlink (a FIFO opened to set an xattr blocked forever).
* Sparse files keep their holes (``sparse.py``); their maps are bounded.
* Limits on entry count, path length, depth and total size, per layer; and one
  write budget per pull (``write_budget.py``). The DiffID (sha256 of the
  uncompressed stream) must match the image config.

All of this runs while the blob is still downloading, before its digest is
checked: every limit has to hold for a layer that is a lie from the first byte.

Everything goes to a temporary directory first; the caller renames it into
place only when the whole layer is done, so a failure leaves nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vmcri.errors import DigestMismatch, UnsafeContent
from vmcri.images.decompress import ByteSource, LayerReader
from vmcri.images.layer_dirs import DIR_FLAGS, LayerDirs, lstat_at, set_opaque
from vmcri.images.merged_view import OPAQUE_XATTR, MergedView, is_whiteout
from vmcri.images.sparse import check_map, copy_keeping_holes, write_segments
from vmcri.images.tar_stream import CheckedTarInfo, TarStream, iter_members
from vmcri.images.write_budget import WriteBudget

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_KEPT_XATTR_PREFIXES = ("user.",)
_KEPT_XATTRS = ("security.capability",)
_XATTR_KEY = "SCHILY.xattr."
# What an entry costs the write budget besides its data: an inode and a directory slot.
ENTRY_COST = 256


@dataclass(frozen=True)
class UnpackLimits:
    max_entries: int = 1_000_000
    max_path: int = 4096
    max_component: int = 255
    max_depth: int = 128  # directories, after resolving symlinks
    max_walk: int = 1024  # components one parent path may go through, symlinks included
    max_bytes: int = 64 << 30  # bytes of file data in one layer
    max_sparse_segments: int = 65_536
    max_sparse_size: int = 1 << 40  # apparent size of one sparse file


DEFAULT_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str
    size: int  # bytes of regular file data
    entries: int
    compression: str


def unpack_layer(
    blob: ByteSource,
    dest: Path,
    lowers: Sequence[Path],
    expected_diff_id: str,
    limits: UnpackLimits = DEFAULT_LIMITS,
    preserve_owner: bool | None = None,
    budget: WriteBudget | None = None,
    label: str | None = None,
) -> UnpackResult:
    """Unpack the layer stream ``blob`` into the empty directory ``dest``.

    ``lowers`` are the diff directories of the layers below, topmost first.
    ``budget`` is the pull's write budget; ``label`` names the layer in errors
    (the blob digest; the DiffID by default).
    Raises UnsafeContent (an entry breaks a rule; names the entry),
    ResourceExhausted (over the budget), DigestMismatch (the DiffID differs).
    On error ``dest`` may hold a partial tree: the caller removes it.
    """
    owner = os.geteuid() == 0 if preserve_owner is None else preserve_owner
    label = label or expected_diff_id
    reader = LayerReader(blob)
    stream = TarStream(reader, label)
    unpacker = _Unpacker(dest, lowers, limits, owner, budget, label)
    try:
        try:
            tar = tarfile.open(  # noqa: SIM115 -- closed below, after the loop
                fileobj=stream,  # type: ignore[call-overload]
                mode="r:",
                tarinfo=CheckedTarInfo,
            )
        except tarfile.TarError as exc:
            raise UnsafeContent(f"layer {label}: not a tar archive: {exc}") from exc
        try:
            for member in iter_members(tar, stream, label):
                unpacker.add(member, tar, stream)
        except tarfile.TarError as exc:
            raise UnsafeContent(f"layer {label}: broken tar archive: {exc}") from exc
        except RecursionError as exc:  # tarfile recurses once per chained header
            raise UnsafeContent(f"layer {label}: too many chained tar headers") from exc
        finally:
            tar.close()
        reader.drain()
        unpacker.finish()
    finally:
        unpacker.close()
    diff_id = reader.digest()
    if diff_id != expected_diff_id:
        raise DigestMismatch(
            f"layer {label}: uncompressed content hashes to {diff_id}, "
            f"image config says {expected_diff_id}"
        )
    return UnpackResult(diff_id, unpacker.bytes, unpacker.entries, reader.compression)


def clean_name(name: str, limits: UnpackLimits, what: str = "entry") -> list[str]:
    """Split a tar name into components inside the root.

    Raises UnsafeContent for NUL bytes, over-long names, or ``..`` escaping the root.
    """
    if "\0" in name:
        raise UnsafeContent(f"layer {what} {name!r}: NUL byte in the name")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path:
        raise UnsafeContent(f"layer {what} {name[:64]!r}...: longer than {limits.max_path}")
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise UnsafeContent(f"layer {what} {name!r}: path escapes the layer root")
            parts.pop()
            continue
        if len(comp.encode("utf-8", "surrogateescape")) > limits.max_component:
            raise UnsafeContent(f"layer {what} {name[:64]!r}: a component is too long")
        parts.append(comp)
    if len(parts) > limits.max_depth + 1:
        raise UnsafeContent(
            f"layer {what} {name[:64]!r}...: more than {limits.max_depth} directories deep"
        )
    return parts


class _Unpacker:
    def __init__(
        self,
        root: Path,
        lowers: Sequence[Path],
        limits: UnpackLimits,
        owner: bool,
        budget: WriteBudget | None,
        label: str,
    ) -> None:
        self.limits = limits
        self.owner = owner
        self.budget = budget
        self.label = label
        self.entries = 0
        self.bytes = 0
        self.view = MergedView([root, *lowers], limits.max_depth, limits.max_walk)
        self.dirs = LayerDirs(root, self.view, owner)
        # Directory mtimes, restored at the end; kept compact (about 80 bytes a
        # directory), as a layer may hold a million of them.
        self._dir_paths: list[str] = []
        self._dir_mtimes = array("d")

    def close(self) -> None:
        self.dirs.close()

    def _charge(self, n: int) -> None:
        if self.budget is not None:
            self.budget.charge(n, self.label)

    # -- per entry ------------------------------------------------------------

    def add(self, m: tarfile.TarInfo, tar: tarfile.TarFile, stream: TarStream) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeContent(f"layer {self.label}: more than {self.limits.max_entries} entries")
        self.dirs.trim()
        self._charge(ENTRY_COST)
        parts = clean_name(m.name, self.limits)
        if not parts:
            return  # the root itself: the layer root keeps its own metadata
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, m.name)
            return
        if m.ischr() or m.isblk():
            raise UnsafeContent(
                f"layer entry {m.name!r}: device nodes are not allowed in image layers"
            )
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise UnsafeContent(f"layer entry {m.name!r}: unsupported tar type {m.type!r}")
        parent = self.view.resolve(parts[:-1], m.name)
        pfd = self.dirs.fd(parent, m.name)
        path = (*parent, base)
        existing = lstat_at(pfd, base)
        if existing is not None:
            if m.isdir() and stat.S_ISDIR(existing.st_mode):
                self._dir_meta(pfd, base, m)
                self._dir_time(path, m.mtime)
                return
            self.dirs.remove(pfd, path)
        self.view.changed(path)
        if m.isdir():
            os.mkdir(base, 0o700, dir_fd=pfd)
            if existing is not None and is_whiteout(existing):
                # Deleted, then recreated in the same layer: hide the lower contents.
                set_opaque(pfd, base)
            self._dir_meta(pfd, base, m)
            self._dir_time(path, m.mtime)
        elif m.isreg():
            self._file(pfd, base, m, tar, stream)
        elif m.issym():
            if len(m.linkname) > self.limits.max_path or "\0" in m.linkname:
                raise UnsafeContent(f"layer entry {m.name!r}: bad symlink target")
            self._charge(len(m.linkname))
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._path_meta(pfd, base, m, symlink=True)
        elif m.islnk():
            self._hardlink(pfd, base, m)
        else:
            os.mkfifo(base, 0o600, dir_fd=pfd)
            self._path_meta(pfd, base, m, symlink=False)

    def _file(
        self, pfd: int, base: str, m: tarfile.TarInfo, tar: tarfile.TarFile, stream: TarStream
    ) -> None:
        segments: list[tuple[int, int]] | None = None
        data = m.size
        if m.issparse():
            segments = list(m.sparse or ())  # type: ignore[arg-type]  # typeshed: bytes
            data = check_map(
                m,
                segments,
                tar.offset - m.offset_data,
                self.limits.max_sparse_segments,
                self.limits.max_sparse_size,
                self.label,
            )
        self.bytes += data
        if self.bytes > self.limits.max_bytes:
            raise UnsafeContent(
                f"layer {self.label}: more than {self.limits.max_bytes} bytes of files"
            )
        self._charge(data)
        fd = os.open(
            base,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=pfd,
        )
        try:
            stream.seek(m.offset_data)
            if segments is None:
                stream.copy_to(fd, m.size)
            else:
                write_segments(fd, stream, segments, m.size)
            self._fd_meta(fd, m)
        finally:
            os.close(fd)

    def _hardlink(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        target = clean_name(m.linkname, self.limits, "hard link target")
        if not target:
            raise UnsafeContent(f"layer entry {m.name!r}: hard link to the root")
        tparent = self.view.resolve(target[:-1], m.name)
        tname = target[-1]
        tfd = self.dirs.fd(tparent, m.name)
        st = lstat_at(tfd, tname)
        if st is None:
            self.view.changed((*tparent, tname))
            self._copy_up((*tparent, tname), tfd, tname, m.name)
            st = lstat_at(tfd, tname)
        if st is None or stat.S_ISDIR(st.st_mode) or is_whiteout(st):
            raise UnsafeContent(
                f"layer entry {m.name!r}: hard link to {m.linkname!r}, which is not a file "
                "of this image"
            )
        os.link(tname, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _copy_up(self, path: tuple[str, ...], tfd: int, tname: str, entry: str) -> None:
        """Copy a lower layer's file into this layer so it can be hard-linked."""
        found = self.view.lookup_lower(path)
        if found is None:
            return
        src_path, st = found
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src_path), tname, dir_fd=tfd)
        elif stat.S_ISREG(st.st_mode):
            sfd = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(sfd).st_mode):
                    raise UnsafeContent(f"layer entry {entry!r}: hard link to a special file")
                dfd = os.open(
                    tname,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=tfd,
                )
                try:
                    copy_keeping_holes(sfd, dfd, st.st_size, self._charge)
                    if self.owner:
                        os.fchown(dfd, st.st_uid, st.st_gid)
                    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
        else:
            raise UnsafeContent(f"layer entry {entry!r}: hard link to a special file")

    def _whiteout(self, parts: list[str], name: str) -> None:
        parent = self.view.resolve(parts[:-1], name)
        pfd = self.dirs.fd(parent, name)
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self.view.changed(parent)
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise UnsafeContent(f"layer entry {name!r}: malformed whiteout")
        path = (*parent, target)
        if lstat_at(pfd, target) is not None:
            self.dirs.remove(pfd, path)
        self.view.changed(path)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    # -- metadata -------------------------------------------------------------
    # Through an fd we opened ourselves (a regular file we created, a directory
    # opened O_DIRECTORY|O_NOFOLLOW), or by name without following the last
    # component; never by opening a FIFO, which blocks until a writer comes.

    def _dir_meta(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
        try:
            if self.owner:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)
            self._xattrs(fd, m)
        finally:
            os.close(fd)

    def _fd_meta(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.owner:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)
        os.utime(fd, (m.mtime, m.mtime))
        self._xattrs(fd, m)

    def _path_meta(self, pfd: int, base: str, m: tarfile.TarInfo, symlink: bool) -> None:
        """Symlinks and FIFOs: no xattrs (Linux keeps user.* to files and directories)."""
        if self.owner:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not symlink:
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, fd: int, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_KEY):
                continue
            name = key[len(_XATTR_KEY) :]
            if not (name.startswith(_KEPT_XATTR_PREFIXES) or name in _KEPT_XATTRS):
                continue
            if name == "security.capability" and not self.owner:
                continue
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                    raise

    def _dir_time(self, path: tuple[str, ...], mtime: float) -> None:
        self._dir_paths.append("/".join(path))  # lossless: names hold no "/"
        self._dir_mtimes.append(mtime)

    def finish(self) -> None:
        """Directory mtimes last: creating children changed them."""
        self.dirs.drop()
        for path, mtime in zip(reversed(self._dir_paths), reversed(self._dir_mtimes), strict=True):
            try:
                fd = self.dirs.open_existing(tuple(path.split("/")))
            except OSError:
                continue  # replaced later in the archive
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
