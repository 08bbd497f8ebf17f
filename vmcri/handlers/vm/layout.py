"""Where a VM pod's files live, on the host and as the guest sees them.

The guest can write whatever it is shown, so the host never mounts on, opens
or walks a path the guest can write (the class of Kata Containers'
CVE-2020-2026, where the host mounted a rootfs onto a guest-planted symlink).
A container's rootfs reaches the guest as disks (``disks.py``), not through a
share, and kubelet's emptyDirs, small configMap-like volumes, /etc/hosts and termination
logs live in the guest (``guest_volumes.py``). The host mounts the other kubelet volumes
(hostPath and the like) and image volumes in ``mounts/``,
which the guest never sees, and shares a read-only slave bind of it
(``share/``): mounts made below ``mounts/`` later appear below ``share/`` with
their own flags, so the guest can write inside a volume, but never the
directories that hold the mount points. Per sandbox, under the backend's
runtime dir::

    <state>/backends/<handler>/sockets/<first 16 hex of the id>.agent
                                    the agent's virtio-serial port (QEMU listens);
                                    kept short: unix socket paths end at 107 bytes
    <state>/backends/<handler>/<sandbox-id>/    0700, host only
        console.log                 the guest serial console (virtlogd writes it)
        exits/<id>.json             how a container ended, written by the host
        mounts/                     host only: every mount the host makes for the pod
            containers/<id>/volumes/<n>         bind mounts of its kubelet volumes
            containers/<id>/image-volumes/<n>   read-only views of images it mounts
        share/                      the ONLY host directory shared into the VM:
                                    mounts/ again, read-only, nosuid, nodev
        mountns                     pins the pod's mount namespace, where its
                                    volumes are bound (``volumes.py``)
        guest-volumes.json          the pod's volumes that live in its guest, synced
                                    from their host paths (``volume_sync.py``)
        views/<id>                  host only, never shared: the image's layers,
                                    read-only, while the container's user is looked up
        jail/                       empty: where QEMU's root is mounted, in its own mount
                                    namespace (``launcher.py``, ``domain.Jail``)

and under the backend's persistent dir (on disk: a guest that fills its rootfs
must not eat host memory, as it would on the tmpfs of ``/run``)::

    <root>/backends/<handler>/<sandbox-id>/     0700, host only
        writable.img                the pod's sized file system for writable layers: an
                                    ext4 the host makes empty and never mounts; the
                                    guest's disk at LUN 0, where the agent puts each
                                    container's overlay upper and work dirs (without a
                                    size limit they stay in the guest's memory)
        layers/<chain>/layer.erofs  a hard link to each image layer the pod's disks are
                                    (``disks.py``): the only layers its QEMU can open,
                                    and read-only in its jail
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmcri.agent.types import Mount9p
from vmcri.handlers.vm.domain import SHARE_TAG

GUEST_SHARE = "/run/vmcri/shared"
# How the agent mounts the pod's 9p share (MountShares), when a container first has a volume.
GUEST_SHARE_MOUNT = Mount9p(SHARE_TAG, GUEST_SHARE, ("msize=262144",))
# A container's root in the spec the host sends: a stand-in, which the agent replaces with
# its bundle's rootfs/, where it mounts the overlay of the container's layer disks.
GUEST_ROOTFS = "/run/vmcri/rootfs"
LAYER_LINKS = "layers"  # below the pod's disk dir


MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class SandboxLayout:
    base: Path  # <state>/backends/<handler>/<sandbox-id>
    disk: Path  # <root>/backends/<handler>/<sandbox-id>

    @property
    def agent_socket(self) -> Path:
        return self.base.parent / "sockets" / f"{self.base.name[:16]}.agent"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def exits(self) -> Path:
        return self.base / "exits"

    @property
    def mounts(self) -> Path:
        return self.base / "mounts"

    @property
    def share(self) -> Path:
        return self.base / "share"

    @property
    def mount_namespace(self) -> Path:
        return self.base / "mountns"

    def container_mounts(self, container_id: str) -> Path:
        return self.mounts / "containers" / container_id

    def user_view(self, container_id: str) -> Path:
        """Host only, never shared: the image's layers, read-only, while the container's
        user is looked up in its /etc/passwd."""
        return self.base / "views" / container_id

    def volume(self, container_id: str, index: int) -> Path:
        return self.container_mounts(container_id) / "volumes" / str(index)

    def image_volume(self, container_id: str, index: int) -> Path:
        return self.container_mounts(container_id) / "image-volumes" / str(index)

    @property
    def jail(self) -> Path:
        return self.base / "jail"

    @property
    def layer_links(self) -> Path:
        return self.disk / LAYER_LINKS

    @property
    def writable_image(self) -> Path:
        return self.disk / "writable.img"

    @property
    def writable(self) -> Path:
        """Where an older vmcri mounted writable.img on the host (removal still looks)."""
        return self.disk / "writable"

    def upper(self, container_id: str) -> Path:
        return self.writable / container_id

    def exit_file(self, container_id: str) -> Path:
        return self.exits / f"{container_id}.json"

    def guest_path(self, host_path: Path) -> str:
        """The guest path of a host path below ``mounts/`` (seen through the share)."""
        return f"{GUEST_SHARE}/{host_path.relative_to(self.mounts)}"
