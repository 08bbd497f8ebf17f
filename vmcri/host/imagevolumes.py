"""Image volumes: an image's layers mounted read-only into a container (CRI ``Mount.image``).

Both backends mount one read-only view per image a container names: an
overlay with only lower directories (overlayfs has no writable layer without
an upper directory, so the view itself is read-only), or, for a one-layer
image, a read-only bind mount of that layer. The spec builder then bind-mounts
the view (or ``image_sub_path`` inside it) at the container path.

``image_sub_path`` is untrusted twice over: kubelet passes a user's string, and
the image may hold symlinks pointing anywhere. The lexical check happens before
anything is mounted (:func:`check_sub_path`); symlinks are resolved inside the
mounted view (:func:`resolve_sub_path`), so the final source never leaves it.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Sequence

from vmcri.errors import FailedPrecondition, InvalidArgument
from vmcri.host.rootpath import join_in_root
from vmcri.model import Mount

# mount(2) takes one page of options.
MAX_OPTIONS = 4000


def check_sub_path(sub_path: str, index: int) -> None:
    """Reject a sub-path that is absolute or climbs out with ``..``.

    Raises InvalidArgument naming ``config.mounts[i].image_sub_path``.
    """
    if not sub_path:
        return
    if sub_path.startswith("/") or ".." in sub_path.split("/") or "\x00" in sub_path:
        raise InvalidArgument(
            f"config.mounts[{index}].image_sub_path {sub_path!r}: must be a relative path "
            "inside the image (no leading '/', no '..')"
        )


def readonly_overlay_options(layer_dirs: Sequence[str]) -> str:
    """Overlay data with lower directories only (topmost first); needs two or more layers.

    Raises FailedPrecondition if a path holds an overlay separator or the
    options do not fit a page.
    """
    if len(layer_dirs) < 2:
        raise FailedPrecondition("a lower-only overlay needs at least two layers")
    for path in layer_dirs:
        if any(c in path for c in ",:\n"):
            raise FailedPrecondition(f"layer path {path!r} cannot be used in an overlay mount")
    data = f"lowerdir={':'.join(reversed(layer_dirs))}"
    if len(data) > MAX_OPTIONS:
        raise FailedPrecondition(
            f"image has too many layers for one overlay mount ({len(layer_dirs)})"
        )
    return data


def resolve_sub_path(view: str, mount: Mount, index: int) -> Mount:
    """The mount with ``image_sub_path`` rewritten to its symlink-free form inside ``view``.

    ``view`` is the mounted image on this host. The result has no symlinks and
    no ``..``, so joining it to the view (where the spec builder does, possibly
    under another root, as in a pod VM) cannot leave the image.
    Raises InvalidArgument naming ``config.mounts[i].image_sub_path`` when the
    path escapes or does not exist in the image.
    """
    check_sub_path(mount.image_sub_path, index)
    if not mount.image_sub_path:
        return mount
    field = f"config.mounts[{index}].image_sub_path"
    try:
        real = join_in_root(view, mount.image_sub_path)
    except OSError as exc:
        raise InvalidArgument(f"{field} {mount.image_sub_path!r}: {exc.strerror}") from exc
    if not os.path.exists(real):
        raise InvalidArgument(f"{field} {mount.image_sub_path!r}: does not exist in the image")
    relative = posixpath.relpath(real, view)
    if relative == ".." or relative.startswith("../"):
        raise InvalidArgument(f"{field} {mount.image_sub_path!r}: leaves the image")
    return dataclasses.replace(mount, image_sub_path="" if relative == "." else relative)


def first_mount_per_image(mounts: Sequence[Mount]) -> dict[str, int]:
    """Image reference -> index of the first mount naming it: one view per distinct image."""
    first: dict[str, int] = {}
    for i, mount in enumerate(mounts):
        if mount.image and mount.image not in first:
            first[mount.image] = i
    return first
