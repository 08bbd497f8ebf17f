"""Directories of the layer being unpacked, reached only through ``O_NOFOLLOW`` fds.

Every entry is created relative to a directory fd opened component by
component from the layer root, so nothing the archive holds can redirect a
write outside it. Open fds are cached per directory, at most
:data:`MAX_OPEN_DIRS` between entries (a layer with a million directories
must not exhaust the daemon's file descriptors); the cache is trimmed only
between entries, so an fd handed out stays open for the whole entry.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from vmcri.errors import UnsafeContent
from vmcri.images.merged_view import OPAQUE_XATTR, MergedView, is_whiteout

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_DIRS = 256


class LayerDirs:
    def __init__(self, root: Path, view: MergedView, owner: bool) -> None:
        self.root = root
        self._view = view
        self._owner = owner
        self.root_fd = os.open(root, DIR_FLAGS)
        self._fds: dict[tuple[str, ...], int] = {}  # oldest use first

    def close(self) -> None:
        self.drop()
        os.close(self.root_fd)

    def drop(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def trim(self) -> None:
        """Close the least recently used fds; only between entries."""
        while len(self._fds) > MAX_OPEN_DIRS:
            os.close(self._fds.pop(next(iter(self._fds))))

    def fd(self, parts: tuple[str, ...], entry: str) -> int:
        """An fd of directory ``parts`` of this layer, created (like its lower) if missing.

        Raises UnsafeContent naming ``entry`` when a component is not a directory.
        """
        n = len(parts)
        while n and parts[:n] not in self._fds:
            n -= 1
        cur = self._fds[parts[:n]] if n else self.root_fd
        if n:
            self._fds[parts[:n]] = self._fds.pop(parts[:n])  # most recently used
        for i in range(n, len(parts)):
            comp, prefix = parts[i], parts[: i + 1]
            st = lstat_at(cur, comp)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                if not is_whiteout(st):
                    raise UnsafeContent(
                        f"layer entry {entry!r}: {'/'.join(prefix)!r} is not a directory"
                    )
                os.unlink(comp, dir_fd=cur)
                os.mkdir(comp, 0o755, dir_fd=cur)
                self._view.changed(prefix)
                set_opaque(cur, comp)
            elif st is None:
                self._mkdir_like_lower(cur, comp, prefix)
            cur = self._fds[prefix] = os.open(comp, DIR_FLAGS, dir_fd=cur)
        return cur

    def _mkdir_like_lower(self, pfd: int, comp: str, prefix: tuple[str, ...]) -> None:
        """An implicit parent directory takes its lower twin's metadata (overlay shows ours)."""
        os.mkdir(comp, 0o755, dir_fd=pfd)
        found = self._view.lookup_lower(prefix)
        if found is None or not stat.S_ISDIR(found[1].st_mode):
            return
        st = found[1]
        if self._owner:
            os.chown(comp, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(comp, stat.S_IMODE(st.st_mode), dir_fd=pfd, follow_symlinks=False)
        os.utime(comp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def open_existing(self, parts: tuple[str, ...]) -> int:
        """A new fd of existing directory ``parts``. Raises OSError if it is gone."""
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for comp in parts:
                nfd = os.open(comp, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def remove(self, pfd: int, path: tuple[str, ...]) -> None:
        """Remove ``path`` (whose parent is open as ``pfd``) from this layer."""
        name = path[-1]
        st = lstat_at(pfd, name)
        if st is None:
            return
        self._view.changed(path)
        if stat.S_ISDIR(st.st_mode):
            n = len(path)
            for key in [k for k in self._fds if k[:n] == path]:
                os.close(self._fds.pop(key))
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def set_opaque(pfd: int, base: str) -> None:
    fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
    try:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
    finally:
        os.close(fd)
