"""The image's root filesystem as the container will see it, for path resolution.

A layer's entry ``a/b/c`` is placed where the container would find ``a/b``:
symlinks in the parent path are followed *inside the image* (this layer over
the lower layers, whiteouts and opaque directories honoured), never on the
host. The lower layers never change during an unpack; the layer being written
(the first of ``layers``) changes only through the unpacker, which reports
every change with :meth:`MergedView.changed`.

Cost: the walk goes one component at a time, keeping the lower layers in which
the current directory is a real, visible directory, so a lookup costs one
``lstat`` per layer and component (walking every prefix again from the root
made an entry at depth 400 cost 1.7 s). Results are cached per parent path;
the longest cached prefix is the starting point, so the usual tar order
(parents first) resolves in one step per entry. Depth is capped, so is the
number of components one resolution may walk through symlinks.

The string paths lstat'ed here never cross a symlink: a lower layer takes part
only while every prefix of the path is a real directory in it, and this layer
is written only by us.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from vmcri.errors import UnsafeContent

OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_SYMLINK_HOPS = 40
_CACHE_SIZE = 4096  # cached resolutions
_SEEN_SIZE = 65_536  # paths they depend on

Found = tuple[str, os.stat_result]
_Lowers = tuple[Path, ...]


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class MergedView:
    """Resolve and look up paths in ``layers`` (the layer being written first)."""

    def __init__(self, layers: Sequence[Path], max_depth: int, max_walk: int) -> None:
        self._top = layers[0]
        self._lowers: _Lowers = tuple(layers[1:])
        self.max_depth = max_depth
        self._max_walk = max_walk  # components one resolution may go through
        self._cache: dict[tuple[str, ...], tuple[tuple[str, ...], _Lowers]] = {}
        self._seen: set[tuple[str, ...]] = set()  # paths the cached results depend on

    def changed(self, path: tuple[str, ...]) -> None:
        """``path`` of the top layer was created, removed or made opaque."""
        if path in self._seen:
            self._cache.clear()
            self._seen.clear()

    def resolve(self, parts: Sequence[str], entry: str) -> tuple[str, ...]:
        """The real directory path ``parts`` names, symlinks followed inside the image.

        Raises UnsafeContent naming ``entry`` for symlink loops, a non-directory
        in the path, a path deeper than ``max_depth`` or too long a walk.
        """
        key = tuple(parts)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        n = len(key) - 1
        while n > 0 and (hit := self._cache.get(key[:n])) is None:
            n -= 1
        resolved: list[str] = list(hit[0]) if hit is not None else []
        # stack[i]: the lowers in which resolved[:i] is a visible directory (None: not known yet).
        stack: list[_Lowers | None] = [None] * len(resolved)
        stack.append(hit[1] if hit is not None else self._lowers)
        pending = list(reversed(key[n:] if hit is not None else key))
        seen: list[tuple[str, ...]] = []
        hops = walked = 0
        while pending:
            comp = pending.pop()
            walked += 1
            if walked > self._max_walk:
                raise UnsafeContent(
                    f"layer entry {entry!r}: its path goes through more than "
                    f"{self._max_walk} components"
                )
            if comp in ("", "."):
                continue
            if comp == "..":
                if resolved:
                    resolved.pop()
                    stack.pop()
                    if stack[-1] is None:
                        stack = self._stack_for(resolved)
                continue
            path = (*resolved, comp)
            seen.append(path)
            lowers = stack[-1]
            assert lowers is not None
            found, below = self._step(lowers, path)
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnsafeContent(f"layer entry {entry!r}: too many symlinks in its path")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    resolved, stack = [], [self._lowers]
                pending.extend(reversed(target.split("/")))
                continue
            if found is not None and not stat.S_ISDIR(found[1].st_mode):
                raise UnsafeContent(f"layer entry {entry!r}: {'/'.join(path)!r} is not a directory")
            resolved.append(comp)
            stack.append(below)
            if len(resolved) > self.max_depth:
                raise UnsafeContent(
                    f"layer entry {entry!r}: path is more than {self.max_depth} directories deep"
                )
        result = tuple(resolved)
        if len(self._cache) >= _CACHE_SIZE or len(self._seen) >= _SEEN_SIZE:
            self._cache.clear()
            self._seen.clear()
        last = stack[-1]
        assert last is not None
        self._cache[key] = (result, last)
        self._seen.update(seen)
        return result

    def lookup_lower(self, path: tuple[str, ...]) -> Found | None:
        """The entry at ``path`` in the lower layers only, never following links."""
        lowers = self._lowers
        found: Found | None = None
        for depth in range(1, len(path) + 1):
            found, lowers = self._step(lowers, path[:depth], top=False)
            if found is None:
                return None
            if depth < len(path) and not stat.S_ISDIR(found[1].st_mode):
                return found
        return found

    def _stack_for(self, resolved: Sequence[str]) -> list[_Lowers | None]:
        stack: list[_Lowers | None] = [self._lowers]
        lowers = self._lowers
        for depth in range(1, len(resolved) + 1):
            _, lowers = self._step(lowers, tuple(resolved[:depth]))
            stack.append(lowers)
        return stack

    def _step(
        self, lowers: _Lowers, path: tuple[str, ...], top: bool = True
    ) -> tuple[Found | None, _Lowers]:
        """The entry at ``path`` (its parent visible as a directory in ``lowers``),
        and the lowers in which ``path`` itself is a visible directory."""
        rel = "/".join(path)
        found: Found | None = None
        below: list[Path] = []
        for i, layer in enumerate((self._top, *lowers) if top else lowers):
            full = os.path.join(layer, rel)
            try:
                st = os.lstat(full)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            if found is None:
                found = (full, st)
            if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found[1].st_mode):
                break
            if not top or i > 0:
                below.append(layer)
            if _is_opaque(full):
                break
        return found, tuple(below)


def _is_opaque(path: str) -> bool:
    with contextlib.suppress(OSError):
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    return False
