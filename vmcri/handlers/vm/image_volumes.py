"""Image volumes of a VM pod's container: read-only image views inside the pod share.

The view is mounted on the host below the container's share directory, so the
guest sees it through the shared file system like the rootfs; the sub-path is
resolved on the host, where the image's symlinks can be followed safely, and
the spec only names guest paths. The views go away with the container's share
directory (``VmBackend._release_container`` unmounts everything below it).
"""

from __future__ import annotations

import dataclasses

from vmcri.errors import FailedPrecondition
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.host.imagevolumes import first_mount_per_image, resolve_sub_path
from vmcri.host.mounts import Mounter
from vmcri.store.records import ContainerRecord


def mount_image_volumes(
    mounter: Mounter, layout: SandboxLayout, container: ContainerRecord
) -> tuple[ContainerRecord, dict[str, str]]:
    """Mount one read-only view per image the container names.

    Returns the container with sub-paths resolved inside the views, and image
    reference -> guest path of its view (for ``SpecContext.image_volume_paths``).
    Raises InvalidArgument naming ``config.mounts[i].image_sub_path``,
    HostCommandError (mount), FailedPrecondition (image not resolved at creation).
    The caller unmounts what was mounted when this fails.
    """
    mounts = container.config.mounts
    layers = {v.mount_index: v.layer_dirs for v in container.image_volumes}
    host_views: dict[str, str] = {}
    guest_views: dict[str, str] = {}
    for ref, index in first_mount_per_image(mounts).items():
        if index not in layers:
            raise FailedPrecondition(f"config.mounts[{index}].image: image was not resolved")
        view = layout.image_volume(container.id, index)
        mounter.readonly_view(layers[index], view)
        host_views[ref] = str(view)
        guest_views[ref] = layout.guest_path(view)
    if not host_views:
        return container, guest_views
    resolved = tuple(
        resolve_sub_path(host_views[m.image], m, i) if m.image else m for i, m in enumerate(mounts)
    )
    config = dataclasses.replace(container.config, mounts=resolved)
    return dataclasses.replace(container, config=config), guest_views
