"""A container's root filesystem: overlayfs over the image's unpacked layers.

The image store's layer directories are shared read-only lower layers; each
container gets its own upper and work directories (its writable layer).

In a pod with its own user namespace the lower layers are ID-mapped clones
(:func:`idmapped_layers`), so that what the image says root owns is owned by
the pod's root; kubelet's volumes are ID-mapped clones staged under the
container's directory (:func:`stage_idmapped_mounts`), since runc 1.1 cannot
ID-map a mount itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from vmcri.errors import FailedPrecondition, HostCommandError
from vmcri.handlers.runc.host import Host
from vmcri.host.imagevolumes import readonly_overlay_options
from vmcri.host.mounts import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT
from vmcri.model import Mount

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


@contextlib.contextmanager
def idmapped_layers(
    host: Host, layer_dirs: Sequence[str], scratch: Path, userns_path: str
) -> Iterator[list[str]]:
    """ID-mapped clones of ``layer_dirs`` under ``scratch`` (the layers as they are without
    ``userns_path``), detached again on leaving.

    Overlayfs keeps private clones of its lower layers and a bind mount copies
    the mapping, so the clones are needed only while mounting on top of them.
    Raises FailedPrecondition (no ID-mapped mounts here), HostCommandError.
    """
    if not userns_path:
        yield list(layer_dirs)
        return
    made: list[str] = []
    try:
        for i, layer in enumerate(layer_dirs):
            path = scratch / str(i)
            path.mkdir(parents=True, exist_ok=True)
            host.idmapped_mount(layer, str(path), userns_path, False)
            made.append(str(path))
        yield made
    finally:
        for clone in made:
            host.unmount(clone)
        # rmdir, never rmtree: a clone that failed to detach still shows the layer.
        for entry in sorted(scratch.glob("*")) if scratch.exists() else []:
            with contextlib.suppress(OSError):
                entry.rmdir()
        with contextlib.suppress(OSError):
            scratch.rmdir()


def mount_rootfs(
    host: Host,
    layer_dirs: Sequence[str],
    layer_dir: Path,
    target: Path,
    userns_path: str = "",
    root: tuple[int, int] | None = None,
) -> None:
    """Create upper/work under ``layer_dir`` and mount the overlay at ``target``.

    With ``userns_path`` the layers are seen through that namespace's mapping,
    and the writable layer's top belongs to ``root`` (the pod's root on the host).
    Raises HostCommandError (mount), FailedPrecondition (layers, ID mapping).
    """
    upper, work, empty = layer_dir / "upper", layer_dir / "work", layer_dir / "empty"
    # Private: copied-up setuid binaries land in upper/ (CVE-2021-41091).
    layer_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in (upper, work, empty, target):
        d.mkdir(parents=True, exist_ok=True)
    if root is not None:
        os.chown(upper, *root)
        os.chown(empty, *root)
    lowers = list(layer_dirs) or [str(empty)]
    with idmapped_layers(host, lowers, layer_dir / "idmapped", userns_path) as mapped:
        host.mount(
            "overlay",
            str(target),
            "overlay",
            0,
            overlay_options(mapped, str(upper), str(work), str(empty)),
        )


def stage_idmapped_mounts(
    host: Host, mounts: Sequence[Mount], stage_dir: Path, userns_path: str
) -> tuple[Mount, ...]:
    """ID-mapped clones of each host-path mount's source, under ``stage_dir``.

    Returns the mounts with ``host_path`` pointing at the clones; image
    volumes pass through (their views are mapped when mounted). Raises
    FailedPrecondition naming ``mounts[i].host_path`` when the source's file
    system cannot be ID-mapped, HostCommandError.
    """
    out: list[Mount] = []
    for i, mount in enumerate(mounts):
        if mount.image:
            out.append(mount)
            continue
        stage = stage_dir / str(i)
        stage_dir.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(mount.host_path):
            stage.mkdir(exist_ok=True)
        else:
            stage.touch(exist_ok=True)
        try:
            host.idmapped_mount(mount.host_path, str(stage), userns_path, True)
        except FailedPrecondition as exc:
            raise FailedPrecondition(f"mounts[{i}].host_path: {exc}") from exc
        out.append(dataclasses.replace(mount, host_path=str(stage)))
    return tuple(out)


def unmount_rootfs(host: Host, target: Path, layer_dir: Path) -> None:
    """Unmount and delete the writable layer; idempotent. Raises HostCommandError."""
    if target.exists():
        host.unmount(str(target))
        if host.is_mounted(str(target)):
            raise HostCommandError(f"rootfs {target} is still mounted")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(layer_dir)


def mount_image_view(
    host: Host, layer_dirs: Sequence[str], target: Path, userns_path: str = ""
) -> None:
    """Mount an image's layers read-only at ``target`` (an image volume).

    Two or more layers: an overlay with lower directories only, which the kernel
    makes read-only. One layer: a read-only bind mount of it. No layer: an empty
    read-only directory. ``userns_path``: seen through that namespace's mapping.
    Raises HostCommandError (mount), FailedPrecondition (layers, ID mapping).
    """
    target.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.idmapped"
    with idmapped_layers(host, layer_dirs, scratch, userns_path) as layers:
        if len(layers) >= 2:
            host.mount("overlay", str(target), "overlay", 0, readonly_overlay_options(layers))
            return
        source = layers[0] if layers else str(target)
        host.mount(source, str(target), "", MS_BIND | MS_REC, "")
    try:
        host.mount("none", str(target), "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, "")
    except BaseException:
        host.unmount(str(target))
        raise


def unmount_image_views(host: Host, directory: Path) -> None:
    """Unmount and delete every view (or staged mount) below ``directory``; idempotent.

    Raises HostCommandError, and deletes nothing, if one stays mounted.
    """
    if not directory.is_dir():
        return
    for view in directory.iterdir():
        host.unmount(str(view))
        if host.is_mounted(str(view)):
            raise HostCommandError(f"image volume {view} is still mounted")
    shutil.rmtree(directory)
