"""Disk usage of a directory tree the guest can write (a container's writable layer).

The tree is hostile: a container (or a guest, through its file share) decides how many
entries it holds, how deep it goes, and may rename or swap directories for symlinks while
it is being walked. So the walk

* goes through directory file descriptors: each directory is opened relative to its
  parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY``, so a directory swapped for a
  symlink fails to open (ELOOP) and is counted as the one inode it is, a device or FIFO
  swapped in is refused before it is opened, and a rename of any ancestor cannot
  redirect the walk: it stays with the directories it opened, all inside the tree;
* stays on the filesystem of ``top`` and enters each directory once;
* is bounded in entries, time and depth (open descriptors are two per level); when a
  bound is hit it reports what it counted, marked incomplete, and logs that once per
  directory;
* is cached per directory for a few seconds (kubelet asks every 10 s, and
  ListContainerStats, ContainerStats and crictl all land here), longer after a walk that
  was slow; callers for the same directory at the same time share one walk.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmcri.host.blockdev import device_name
from vmcri.usage import FsCapacity

log = logging.getLogger(__name__)

MAX_ENTRIES = 250_000  # entries looked at per walk
TIME_BUDGET_S = 1.0  # per walk
MAX_DEPTH = 64  # directory levels below top that are entered
CACHE_TTL_S = 5.0  # a result is reused for this long...
SLOW_WALK_FACTOR = 10.0  # ...or for this many times the walk's duration, if longer
MAX_CONCURRENT_WALKS = 2  # bounds the descriptors and CPU that stats can take at once
MAX_CACHED = 4096  # directories remembered (those of containers that are gone age out)
CLOCK_EVERY = 64  # entries between two looks at the clock

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Listing(Iterator[os.DirEntry[str]], Protocol):
    """What ``os.scandir(fd)`` returns."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class TreeUsage:
    bytes: int  # allocated blocks, hard links counted once
    inodes: int
    bound: str = ""  # the bound that cut the walk short (the numbers are then a lower bound)

    @property
    def complete(self) -> bool:
        return not self.bound


@dataclass(frozen=True)
class WalkLimits:
    max_entries: int = MAX_ENTRIES
    time_budget_s: float = TIME_BUDGET_S
    max_depth: int = MAX_DEPTH


def walk_usage(
    top: Path, limits: WalkLimits = WalkLimits(), clock: Callable[[], float] = time.monotonic
) -> TreeUsage:
    """One walk of ``top``, uncached. A missing ``top`` is (0, 0); vanished entries are skipped."""
    try:
        root = os.open(top, _DIR_FLAGS)
    except FileNotFoundError:
        return TreeUsage(0, 0)
    except OSError as exc:
        return TreeUsage(0, 0, f"cannot open it ({exc.strerror})")
    started = clock()
    device = os.fstat(root).st_dev
    max_entries, budget, max_depth = limits.max_entries, limits.time_budget_s, limits.max_depth
    seen: set[tuple[int, int]] = set()
    size = inodes = looked_at = 0
    bound = too_deep = ""
    stack: list[tuple[int, _Listing]] = []
    try:
        stack.append((root, os.scandir(root)))
        while stack and not bound:
            fd, entries = stack[-1]
            for entry in entries:
                looked_at += 1
                if looked_at > max_entries:
                    bound = f"over {max_entries} entries"
                    break
                if looked_at % CLOCK_EVERY == 0 and clock() - started > budget:
                    bound = f"over {budget:g}s"
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed since it was listed
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                size += st.st_blocks * 512
                inodes += 1
                if not stat.S_ISDIR(st.st_mode) or st.st_dev != device:
                    continue
                if len(stack) > max_depth:
                    too_deep = f"over {max_depth} levels deep"
                    continue
                child = open_subdir(fd, entry.name, key)
                if child is None:
                    continue
                try:
                    stack.append((child, os.scandir(child)))
                except OSError:
                    os.close(child)
                    continue
                break  # into the child; this directory's listing resumes after it
            else:
                stack.pop()
                entries.close()
                os.close(fd)
    finally:
        for fd, entries in stack:
            entries.close()
            os.close(fd)
    return TreeUsage(size, inodes, bound or too_deep)


def open_subdir(parent: int, name: str, expected: tuple[int, int]) -> int | None:
    """``name`` in ``parent`` if it is still the directory that was listed, else None."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None  # gone, or no longer a directory (a symlink: ELOOP; else ENOTDIR)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != expected:
        os.close(fd)  # another directory was renamed in; its own listing counts it
        return None
    return fd


@dataclass
class _Cached:
    lock: threading.Lock
    usage: TreeUsage | None = None
    expires: float = 0.0
    warned: bool = False


class UsageCache:
    """``walk_usage`` results per directory, reused for a short time; thread-safe."""

    def __init__(
        self,
        limits: WalkLimits = WalkLimits(),
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._limits = limits
        self._ttl = ttl_s
        self._clock = clock
        self._max_cached = max_cached
        self._lock = threading.Lock()
        self._entries: dict[str, _Cached] = {}
        self._walks = threading.BoundedSemaphore(MAX_CONCURRENT_WALKS)

    def measure(self, top: Path) -> TreeUsage:
        cached = self._slot(str(top))
        with cached.lock:
            if cached.usage is not None and self._clock() < cached.expires:
                return cached.usage
            with self._walks:
                started = self._clock()
                usage = walk_usage(top, self._limits, self._clock)
                done = self._clock()
            cached.usage = usage
            cached.expires = done + max(self._ttl, SLOW_WALK_FACTOR * (done - started))
            if not usage.complete and not cached.warned:
                cached.warned = True
                log.warning(
                    "disk usage of %s: walk cut short (%s); reporting the %d inodes and "
                    "%d bytes counted (logged once per directory)",
                    top,
                    usage.bound,
                    usage.inodes,
                    usage.bytes,
                )
            return usage

    def _slot(self, key: str) -> _Cached:
        with self._lock:
            cached = self._entries.pop(key, None) or _Cached(threading.Lock())
            self._entries[key] = cached  # most recently used last
            while len(self._entries) > self._max_cached:
                del self._entries[next(iter(self._entries))]
            return cached


_DEFAULT_CACHE = UsageCache()


def tree_usage(top: Path) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes used below ``top``, hard links counted once.

    Cached and bounded (see the module docstring); ``usage_of`` also says whether the
    walk was complete. A missing ``top`` is (0, 0).
    """
    usage = usage_of(top)
    return usage.bytes, usage.inodes


def usage_of(top: Path) -> TreeUsage:
    return _DEFAULT_CACHE.measure(top)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (f_bavail).
    Raises OSError."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def capacity_of(top: Path) -> FsCapacity | None:
    """Size and inodes of the file system ``top`` is on; None if ``top`` is gone.

    ``top`` is opened without following a final symlink, and measured through that
    descriptor, so a tree the guest writes cannot point the host elsewhere.
    """
    try:
        fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        vfs = os.fstatvfs(fd)
        dev = os.fstat(fd).st_dev
    except OSError:
        return None
    finally:
        os.close(fd)
    return FsCapacity(
        device=device_name(os.major(dev), os.minor(dev)),
        limit_bytes=vfs.f_blocks * vfs.f_frsize,
        inodes_total=vfs.f_files,
        inodes_free=vfs.f_favail,
    )
