"""How many bytes one pull may write into the layer store.

Unpacking runs while the blob downloads, before its digest is checked, so a
layer can make the daemon write far more than it downloaded (a gzip bomb, a
sparse file, a hard link that copies a lower file up). One budget covers every
layer of a pull: the smaller of a fixed cap and the free space of the layer
store's file system when the pull starts. Free space is read again every
:data:`RECHECK_BYTES` written, since other pulls share the file system.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vmcri.errors import ResourceExhausted
from vmcri.host.disk import free_bytes

DEFAULT_MAX_PULL_BYTES = 256 << 30
RECHECK_BYTES = 64 << 20

FreeSpace = Callable[[Path], int]


class WriteBudget:
    """Bytes written so far by one pull's unpacks, against its limit. Not thread-safe:
    a pull unpacks its layers one after the other on one thread."""

    def __init__(
        self,
        root: Path,
        max_bytes: int = DEFAULT_MAX_PULL_BYTES,
        free_space: FreeSpace = free_bytes,
    ) -> None:
        self._root = root
        self._free_space = free_space
        free = free_space(root)
        self.limit = min(max_bytes, free)
        self._why = (
            f"the {free} bytes free on {root}"
            if free < max_bytes
            else f"the per-pull limit of {max_bytes} bytes"
        )
        self.used = 0
        self._unchecked = 0

    def charge(self, n: int, layer: str) -> None:
        """Count ``n`` more bytes for ``layer`` (named in the error).

        Raises ResourceExhausted when the pull would go over its limit or the
        file system is running out of space.
        """
        self.used += n
        self._unchecked += n
        if self.used > self.limit:
            raise ResourceExhausted(
                f"layer {layer}: unpacking this image needs more than {self._why}"
            )
        if self._unchecked >= RECHECK_BYTES:
            self._unchecked = 0
            free = self._free_space(self._root)
            if free < RECHECK_BYTES:
                raise ResourceExhausted(
                    f"layer {layer}: only {free} bytes left free on {self._root}"
                )
