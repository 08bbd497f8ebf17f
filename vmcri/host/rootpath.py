"""Resolve a path inside a container rootfs without escaping it (like Go's securejoin).

Image content is untrusted: ``/etc/passwd`` in a rootfs may be a symlink to
``../../../etc/shadow``. Every symlink is resolved as if the rootfs were ``/``.
"""

from __future__ import annotations

import os

MAX_SYMLINKS = 40


def join_in_root(root: str, path: str) -> str:
    """The host path of ``path`` inside ``root``, with symlinks kept inside ``root``.

    Missing components are kept as they are (the result may not exist).
    Raises OSError (ELOOP) after too many symlinks.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(40, f"too many symlinks resolving {path!r} in {root!r}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)
