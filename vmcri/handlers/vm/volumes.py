"""kubelet's host-path mounts of a VM pod's container: bound on the host, seen through the share.

Only those that do not live in the guest (``guest_volumes.py``: emptyDirs, small
configMap-like volumes, /etc/hosts and termination logs do): hostPath, persistent volumes,
subPath binds, anything too big to copy.

Each volume is bound below the container's directory in ``mounts/`` with its flags and
propagation set before it is attached (``HostMounter.bind``), so the copies the pod share,
virtiofsd and QEMU see are read-only where kubelet asked (a guest kernel cannot write
through them) and ``nosuid,nodev``. In the guest the whole share is one file system, so:

* a read-only mount is read-only on the host. Its non-recursive form (the CRI default)
  leaves the host's mounts below it as they are; the guest's own bind is then writable
  when there are such mounts (now, or later with HostToContainer), since a read-only
  guest bind would cover them too, and the host refuses writes to the top (EROFS).
  Recursive read-only is read-only on the host throughout (``mount_setattr`` with
  ``AT_RECURSIVE`` on the detached clone, before it is attached), whatever the guest's
  OCI runtime does; the guest's bind is ``rro`` as well (crun and runc 1.1.5 both
  honour it, and in the guest the whole share is one file system anyway). The host
  needs the new mount API (Linux 5.12) for every bind of a VM pod, so the handler
  announces ``recursive_read_only_mounts`` wherever it runs.
* Private: later host mounts below the source do not reach the pod. HostToContainer: the
  host bind is a slave of the source, so a mount kubelet makes below it later reaches the
  share and the container (virtiofs and 9p serve it as part of the volume).
* Bidirectional cannot be given: a mount made in the guest cannot reach the host, so it is
  refused, naming the field and the handler that can.

The binds are attached in the pod's own mount namespace (``layout.mount_namespace``),
never in the host's: a bind carries copies of the mounts below its source, set on the
node's directories, and a copy in the host's namespace would keep such a directory busy
(its rmdir fails with EBUSY once the mount on it is gone), where a copy in another
namespace is detached by that rmdir, as with a runc container's binds. The source is
still looked up in the host's namespace (kubelet's view); the copies propagation makes
into the file server's namespace carry the volume to the guest (``share_readonly``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container
from pathlib import Path

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.host.mounts import Mounter, mount_points
from vmcri.model import Mount, MountPropagation
from vmcri.oci.mounts import check_recursive_read_only
from vmcri.oci.userns import uses_userns
from vmcri.store.records import ContainerRecord, SandboxRecord


def check_volumes(mounts: tuple[Mount, ...]) -> None:
    """Raises InvalidArgument naming ``config.mounts[i].propagation`` for what a VM cannot do,
    ``mounts[i].recursive_read_only`` for what the CRI does not allow (before any mount)."""
    for i, mount in enumerate(mounts):
        check_recursive_read_only(mount, i, supported=True)
        if mount.propagation is MountPropagation.BIDIRECTIONAL:
            raise InvalidArgument(
                f"config.mounts[{i}].propagation: Bidirectional is not possible in a pod VM "
                "(a mount made in the guest cannot reach the host); use the runc handler"
            )


def check_userns_volumes(
    sandbox: SandboxRecord, container: ContainerRecord, in_guest: Container[int]
) -> None:
    """In a pod with its own user namespace, every volume must be one the guest can ID-map
    (``vmcri/agent/guest/idmap.py``): none may reach it over the share, as 9p cannot be
    ID-mapped (its files would show as the overflow ID, and the pod's root could not
    write them). Raises InvalidArgument naming ``config.mounts[i]``, before any mount."""
    if not uses_userns(sandbox.config.security.namespace_options):
        return
    for i, mount in enumerate(container.config.mounts):
        if mount.image or i not in in_guest:
            what = "image volume" if mount.image else f"host path {mount.host_path!r}"
            raise InvalidArgument(
                f"config.mounts[{i}] ({what} at {mount.container_path!r}): a VM pod with "
                "userns_options mode POD cannot have it, as it would reach the guest over "
                "the 9p share, which cannot be ID-mapped; use the runc handler"
            )


def mount_volumes(
    mounter: Mounter,
    layout: SandboxLayout,
    container: ContainerRecord,
    namespace: Path | None = None,
    skip: Container[int] = (),
) -> dict[int, Mount]:
    """Bind each host-path mount but those in ``skip`` (in the guest: ``pod_volumes.py``),
    attached in the pod's mount ``namespace`` (the host's when None); returns mount index
    -> the mount as the guest makes it.

    Raises InvalidArgument (a missing host path, a propagation a VM cannot give),
    HostCommandError (mount). The caller unmounts what was mounted when this fails.
    """
    mounts = container.config.mounts
    check_volumes(mounts)
    guest: dict[int, Mount] = {}
    for i, mount in enumerate(mounts):
        if mount.image or i in skip:
            continue
        source = Path(mount.host_path)
        if not source.exists():
            raise InvalidArgument(
                f"config.mounts[{i}].host_path {mount.host_path!r}: does not exist"
            )
        source = source.resolve()
        follow = mount.propagation is MountPropagation.HOST_TO_CONTAINER
        target = layout.volume(container.id, i)
        mounter.bind(
            source,
            target,
            readonly=mount.readonly,
            recursive_readonly=mount.recursive_read_only,
            follow_host=follow,
            namespace=namespace,
        )
        # A read-only guest bind would cover the host's writable mounts below the volume.
        covers = mount.readonly and not mount.recursive_read_only
        covers = covers and (follow or any(p != source for p in mount_points(source)))
        guest[i] = dataclasses.replace(
            mount,
            host_path=layout.guest_path(target),
            readonly=mount.readonly and not covers,
        )
    return guest
