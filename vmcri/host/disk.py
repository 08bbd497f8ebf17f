"""Disk usage of a directory tree (a container's writable layer)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_usage(top: Path) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes used below ``top``, hard links counted once.

    Entries that vanish during the walk are skipped; a missing ``top`` is (0, 0).
    """
    size, inodes = 0, 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            size += st.st_blocks * 512
            inodes += 1
    return size, inodes
