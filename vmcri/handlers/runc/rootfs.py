"""A container's root filesystem: overlayfs over the image's unpacked layers.

The image store's layer directories are shared read-only lower layers; each
container gets its own upper and work directories (its writable layer).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from vmcri.errors import FailedPrecondition, HostCommandError
from vmcri.handlers.runc.host import Host
from vmcri.host.imagevolumes import readonly_overlay_options
from vmcri.host.mounts import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT

# mount(2) takes one page of options; longer lowerdir lists need another approach.
MAX_OPTIONS = 4000


def overlay_options(layer_dirs: Sequence[str], upper: str, work: str, empty: str) -> str:
    """The overlay mount data. ``layer_dirs`` are lowest first; overlay wants topmost first.

    An image without layers gets ``empty`` as its only lower directory.
    Raises FailedPrecondition if the option string does not fit a page, or a
    path holds a character overlayfs uses as separator.
    """
    lowers = list(reversed(layer_dirs)) or [empty]
    for path in [*lowers, upper, work]:
        if any(c in path for c in ",:\n"):
            raise FailedPrecondition(f"layer path {path!r} cannot be used in an overlay mount")
    data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    if len(data) > MAX_OPTIONS:
        raise FailedPrecondition(
            f"image has too many layers for one overlay mount ({len(layer_dirs)})"
        )
    return data


def mount_rootfs(host: Host, layer_dirs: Sequence[str], layer_dir: Path, target: Path) -> None:
    """Create upper/work under ``layer_dir`` and mount the overlay at ``target``.

    Raises HostCommandError (mount), FailedPrecondition (layers).
    """
    upper, work, empty = layer_dir / "upper", layer_dir / "work", layer_dir / "empty"
    for d in (upper, work, empty, target):
        d.mkdir(parents=True, exist_ok=True)
    host.mount(
        "overlay",
        str(target),
        "overlay",
        0,
        overlay_options(layer_dirs, str(upper), str(work), str(empty)),
    )


def unmount_rootfs(host: Host, target: Path, layer_dir: Path) -> None:
    """Unmount and delete the writable layer; idempotent. Raises HostCommandError."""
    if target.exists():
        host.unmount(str(target))
        if host.is_mounted(str(target)):
            raise HostCommandError(f"rootfs {target} is still mounted")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(layer_dir)


def mount_image_view(host: Host, layer_dirs: Sequence[str], target: Path) -> None:
    """Mount an image's layers read-only at ``target`` (an image volume).

    Two or more layers: an overlay with lower directories only, which the kernel
    makes read-only. One layer: a read-only bind mount of it. No layer: an empty
    read-only directory. Raises HostCommandError (mount), FailedPrecondition (layers).
    """
    target.mkdir(parents=True, exist_ok=True)
    if len(layer_dirs) >= 2:
        host.mount("overlay", str(target), "overlay", 0, readonly_overlay_options(layer_dirs))
        return
    source = layer_dirs[0] if layer_dirs else str(target)
    host.mount(source, str(target), "", MS_BIND | MS_REC, "")
    try:
        host.mount("none", str(target), "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, "")
    except BaseException:
        host.unmount(str(target))
        raise


def unmount_image_views(host: Host, directory: Path) -> None:
    """Unmount and delete every view below ``directory``; idempotent. Raises HostCommandError."""
    if not directory.is_dir():
        return
    for view in directory.iterdir():
        host.unmount(str(view))
        if host.is_mounted(str(view)):
            raise HostCommandError(f"image volume {view} is still mounted")
    shutil.rmtree(directory)
