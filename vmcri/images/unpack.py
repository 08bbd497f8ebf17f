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
* Limits on entry count, path length and total size; the DiffID (sha256 of the
  uncompressed stream) must match the image config.

Everything goes to a temporary directory first; the caller renames it into
place only when the whole layer is done, so a failure leaves nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vmcri.errors import DigestMismatch, UnsafeContent
from vmcri.images.decompress import ByteSource, LayerReader
from vmcri.images.tar_stream import TarStream

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_KEPT_XATTR_PREFIXES = ("user.",)
_KEPT_XATTRS = ("security.capability",)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINK_HOPS = 40
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    max_entries: int = 1_000_000
    max_path: int = 4096
    max_component: int = 255
    max_bytes: int = 64 << 30  # bytes of file data in one layer


DEFAULT_LIMITS = UnpackLimits()


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str
    size: int  # bytes of regular file data
    entries: int
    compression: str


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def unpack_layer(
    blob: ByteSource,
    dest: Path,
    lowers: Sequence[Path],
    expected_diff_id: str,
    limits: UnpackLimits = DEFAULT_LIMITS,
    preserve_owner: bool | None = None,
) -> UnpackResult:
    """Unpack the layer stream ``blob`` into the empty directory ``dest``.

    ``lowers`` are the diff directories of the layers below, topmost first.
    Raises UnsafeContent (an entry breaks a rule; names the entry),
    DigestMismatch (the DiffID differs). On error ``dest`` may hold a partial
    tree: the caller removes it.
    """
    owner = os.geteuid() == 0 if preserve_owner is None else preserve_owner
    reader = LayerReader(blob)
    stream = TarStream(reader)
    with _Unpacker(dest, lowers, limits, owner) as unpacker:
        try:
            tar = tarfile.open(  # noqa: SIM115 -- closed below, after the loop
                fileobj=stream, mode="r:"  # type: ignore[call-overload]
            )
        except tarfile.TarError as exc:
            raise UnsafeContent(f"layer {expected_diff_id}: not a tar archive: {exc}") from exc
        try:
            for member in tar:
                unpacker.add(member, tar, stream)
        except tarfile.TarError as exc:
            raise UnsafeContent(f"layer {expected_diff_id}: broken tar archive: {exc}") from exc
        finally:
            tar.close()
        reader.drain()
        unpacker.finish()
    diff_id = reader.digest()
    if diff_id != expected_diff_id:
        raise DigestMismatch(f"layer: uncompressed content hashes to {diff_id}, "
                             f"image config says {expected_diff_id}")
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
    return parts


class _Unpacker:
    def __init__(self, root: Path, lowers: Sequence[Path], limits: UnpackLimits,
                 owner: bool) -> None:
        self.root = root
        self.lowers = list(lowers)
        self.limits = limits
        self.owner = owner
        self.entries = 0
        self.bytes = 0
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._fds: dict[tuple[str, ...], int] = {}
        self._dir_times: list[tuple[tuple[str, ...], float]] = []

    def __enter__(self) -> _Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop_cache()
        os.close(self._root_fd)

    # -- per entry ------------------------------------------------------------

    def add(self, m: tarfile.TarInfo, tar: tarfile.TarFile, stream: TarStream) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeContent(f"layer: more than {self.limits.max_entries} entries")
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
        parent = self._resolve(parts[:-1], m.name)
        pfd = self._dir_fd(parent, m.name)
        existing = _lstat(pfd, base)
        if existing is not None:
            if m.isdir() and stat.S_ISDIR(existing.st_mode):
                self._meta(pfd, base, m, is_dir=True)
                self._dir_times.append(((*parent, base), m.mtime))
                return
            self._remove(pfd, (*parent, base))
        if m.isdir():
            os.mkdir(base, 0o700, dir_fd=pfd)
            if existing is not None and is_whiteout(existing):
                # Deleted, then recreated in the same layer: hide the lower contents.
                self._set_opaque(pfd, base)
            self._meta(pfd, base, m, is_dir=True)
            self._dir_times.append(((*parent, base), m.mtime))
        elif m.isreg():
            self._file(pfd, base, m, tar, stream)
        elif m.issym():
            if len(m.linkname) > self.limits.max_path or "\0" in m.linkname:
                raise UnsafeContent(f"layer entry {m.name!r}: bad symlink target")
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._meta(pfd, base, m, is_dir=False, symlink=True)
        elif m.islnk():
            self._hardlink(pfd, base, m)
        else:
            os.mkfifo(base, 0o600, dir_fd=pfd)
            self._meta(pfd, base, m, is_dir=False)

    def _file(self, pfd: int, base: str, m: tarfile.TarInfo, tar: tarfile.TarFile,
              stream: TarStream) -> None:
        self.bytes += m.size
        if self.bytes > self.limits.max_bytes:
            raise UnsafeContent(f"layer: more than {self.limits.max_bytes} bytes of files")
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            if not m.issparse():
                stream.seek(m.offset_data)
                stream.copy_to(fd, m.size)
            elif (src := tar.extractfile(m)) is not None:  # holes: let tarfile map them
                while True:
                    chunk = src.read(_COPY_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            self._apply_meta_fd(fd, m)
        finally:
            os.close(fd)
        self._xattrs(pfd, base, m)

    def _hardlink(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        target = clean_name(m.linkname, self.limits, "hard link target")
        if not target:
            raise UnsafeContent(f"layer entry {m.name!r}: hard link to the root")
        tparent = self._resolve(target[:-1], m.name)
        tname = target[-1]
        tfd = self._dir_fd(tparent, m.name)
        st = _lstat(tfd, tname)
        if st is None:
            self._copy_up((*tparent, tname), tfd, tname, m.name)
            st = _lstat(tfd, tname)
        if st is None or stat.S_ISDIR(st.st_mode) or is_whiteout(st):
            raise UnsafeContent(
                f"layer entry {m.name!r}: hard link to {m.linkname!r}, which is not a file "
                "of this image"
            )
        os.link(tname, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _copy_up(self, path: tuple[str, ...], tfd: int, tname: str, entry: str) -> None:
        """Copy a lower layer's file into this layer so it can be hard-linked."""
        found = self._lookup_lower(path)
        if found is None:
            return
        src_path, st = found
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src_path), tname, dir_fd=tfd)
        elif stat.S_ISREG(st.st_mode):
            sfd = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                dfd = os.open(tname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                              0o600, dir_fd=tfd)
                try:
                    while chunk := os.read(sfd, _COPY_CHUNK):
                        os.write(dfd, chunk)
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
        parent = self._resolve(parts[:-1], name)
        pfd = self._dir_fd(parent, name)
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self._set_opaque_fd(pfd)
            return
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise UnsafeContent(f"layer entry {name!r}: malformed whiteout")
        if _lstat(pfd, target) is not None:
            self._remove(pfd, (*parent, target))
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    # -- metadata -------------------------------------------------------------

    def _meta(self, pfd: int, base: str, m: tarfile.TarInfo, is_dir: bool,
              symlink: bool = False) -> None:
        if self.owner:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not symlink:
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
        if not is_dir:
            os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        if not symlink:
            self._xattrs(pfd, base, m)

    def _apply_meta_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.owner:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)
        os.utime(fd, (m.mtime, m.mtime))

    def _xattrs(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if not (name.startswith(_KEPT_XATTR_PREFIXES) or name in _KEPT_XATTRS):
                continue
            if name == "security.capability" and not self.owner:
                continue
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
            finally:
                os.close(fd)

    def _set_opaque(self, pfd: int, base: str) -> None:
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        try:
            self._set_opaque_fd(fd)
        finally:
            os.close(fd)

    def _set_opaque_fd(self, fd: int) -> None:
        os.setxattr(fd, OPAQUE_XATTR, b"y")

    def finish(self) -> None:
        """Directory mtimes last: creating children changed them."""
        self._drop_cache()
        for parts, mtime in reversed(self._dir_times):
            try:
                fd = self._open_existing(parts)
            except OSError:
                continue  # replaced later in the archive
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)

    # -- path resolution ------------------------------------------------------

    def _resolve(self, parts: Sequence[str], entry: str) -> tuple[str, ...]:
        """Resolve a parent path the way the container will, inside the image root.

        Raises UnsafeContent for symlink loops or a non-directory in the path.
        """
        key = tuple(parts)
        if key in self._fds:
            return key  # already a real directory of this layer
        resolved: list[str] = []
        pending = list(reversed(parts))
        hops = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if resolved:
                    resolved.pop()
                continue
            found = self._lookup((*resolved, comp))
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise UnsafeContent(f"layer entry {entry!r}: too many symlinks in its path")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    resolved = []
                pending.extend(reversed(target.split("/")))
                continue
            if found is not None and not stat.S_ISDIR(found[1].st_mode):
                raise UnsafeContent(
                    f"layer entry {entry!r}: {'/'.join((*resolved, comp))!r} is not a directory"
                )
            resolved.append(comp)
            if len(resolved) > self.limits.max_path // 2:
                raise UnsafeContent(f"layer entry {entry!r}: path too deep")
        return tuple(resolved)

    def _layers(self) -> list[Path]:
        return [self.root, *self.lowers]

    def _lookup(self, path: tuple[str, ...]) -> tuple[str, os.stat_result] | None:
        """The entry at ``path`` in the merged view (this layer over the lowers)."""
        return _merged_lookup(self._layers(), path)

    def _lookup_lower(self, path: tuple[str, ...]) -> tuple[str, os.stat_result] | None:
        return _merged_lookup(self.lowers, path)

    def _dir_fd(self, parts: tuple[str, ...], entry: str) -> int:
        """An fd of directory ``parts`` of this layer, created (like its lower) if missing."""
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        cur = self._root_fd
        for i, comp in enumerate(parts):
            prefix = parts[: i + 1]
            cached = self._fds.get(prefix)
            if cached is not None:
                cur = cached
                continue
            st = _lstat(cur, comp)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                if not is_whiteout(st):
                    raise UnsafeContent(f"layer entry {entry!r}: {'/'.join(prefix)!r} "
                                        "is not a directory")
                os.unlink(comp, dir_fd=cur)
                os.mkdir(comp, 0o755, dir_fd=cur)
                self._set_opaque(cur, comp)
            elif st is None:
                self._mkdir_like_lower(cur, comp, prefix)
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
            self._fds[prefix] = nfd
            cur = nfd
        return cur

    def _mkdir_like_lower(self, pfd: int, comp: str, prefix: tuple[str, ...]) -> None:
        """An implicit parent directory takes its lower twin's metadata (overlay shows ours)."""
        os.mkdir(comp, 0o755, dir_fd=pfd)
        found = self._lookup_lower(prefix)
        if found is None or not stat.S_ISDIR(found[1].st_mode):
            return
        st = found[1]
        if self.owner:
            os.chown(comp, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(comp, stat.S_IMODE(st.st_mode), dir_fd=pfd, follow_symlinks=False)
        os.utime(comp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _open_existing(self, parts: tuple[str, ...]) -> int:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for comp in parts:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _remove(self, pfd: int, path: tuple[str, ...]) -> None:
        """Remove ``path`` (whose parent is open as ``pfd``) from this layer."""
        name = path[-1]
        st = _lstat(pfd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            n = len(path)
            for key in [k for k in self._fds if k[:n] == path]:
                os.close(self._fds.pop(key))
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)

    def _drop_cache(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _merged_lookup(
    layers: Sequence[Path], path: tuple[str, ...]
) -> tuple[str, os.stat_result] | None:
    """Look ``path`` up in the overlay of ``layers`` (topmost first), never following links.

    Only layers where every prefix of ``path`` is a real directory take part, so
    the string paths lstat'ed here never cross a symlink.
    """
    active = list(layers)
    found: tuple[str, os.stat_result] | None = None
    for depth in range(1, len(path) + 1):
        rel = "/".join(path[:depth])
        found = None
        next_active: list[Path] = []
        for layer in active:
            full = os.path.join(layer, rel)
            try:
                st = os.lstat(full)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            if found is None:
                found = (full, st)
            if not stat.S_ISDIR(st.st_mode):
                break
            if not stat.S_ISDIR(found[1].st_mode):
                break
            next_active.append(layer)
            if _is_opaque(full):
                break
        if found is None:
            return None
        if depth < len(path) and not stat.S_ISDIR(found[1].st_mode):
            return found
        active = next_active
    return found


def _is_opaque(path: str) -> bool:
    with contextlib.suppress(OSError):
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    return False
