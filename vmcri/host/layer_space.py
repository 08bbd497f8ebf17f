"""The disk the pods' writable layers have been promised, against the disk that is free.

A VM pod's writable layer is an ext4 file system in a sparse file under the root dir
(:mod:`vmcri.host.sized_fs`): its size is a promise, not an allocation, and the
promises of all pods together can exceed the file system they live on (eight 10 GiB
layers on a 40 GiB disk), so a pod that writes what it was promised can fill the node's
disk. What each layer can still claim is its size less the blocks it already has: the
blocks it has are no longer free, so they must not be counted twice.

Promises are read from the files themselves (``<root>/backends/<handler>/<pod>/
writable.img``, host-only directories), so every vm handler of the daemon, and pods of
an earlier run of it, are counted. ``ALLOCATION`` is held from the measure to the
creation of a new layer, so two pods started at once cannot both take the last room.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from vmcri.host.disk import free_bytes

IMAGE_NAME = "writable.img"  # as SandboxLayout.writable_image names it
ALLOCATION = threading.Lock()  # measure and create under it (one daemon process)


@dataclass(frozen=True)
class LayerSpace:
    free_bytes: int  # free on the file system, for unprivileged writers (f_bavail)
    promised_bytes: int  # the pods' layers' sizes together
    claimable_bytes: int  # of those, not allocated yet: what the pods can still take
    layers: int  # how many layers

    def available_bytes(self, reserve_bytes: int) -> int:
        """What a new promise can take and leave ``reserve_bytes`` free when every pod
        has written all it was promised."""
        return max(0, self.free_bytes - self.claimable_bytes - reserve_bytes)


def measure(backends: Path) -> LayerSpace:
    """The layers below ``backends`` (``<root>/backends``) on its file system; raises OSError
    (``backends`` cannot be read). A layer that goes away meanwhile is skipped."""
    free = free_bytes(backends)
    device = os.stat(backends).st_dev
    promised = claimable = layers = 0
    for handler in _dirs(backends):
        for pod in _dirs(handler):
            try:
                info = os.stat(pod / IMAGE_NAME, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_dev != device:
                continue
            layers += 1
            promised += info.st_size
            claimable += max(0, info.st_size - info.st_blocks * 512)
    return LayerSpace(free, promised, claimable, layers)


def _dirs(parent: Path) -> list[Path]:
    """The real directories (not symlinks) in ``parent``; none when it is gone."""
    try:
        with os.scandir(parent) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
