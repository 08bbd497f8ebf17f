"""Where a VM pod's files live, on the host and as the guest sees them.

Per sandbox, under the backend's state dir::

    <state>/backends/vm/sockets/<first 16 hex of the id>.agent
                                    the agent's virtio-serial port (QEMU listens);
                                    kept short: unix socket paths end at 107 bytes
    <state>/backends/vm/<sandbox-id>/
        console.log                 the guest serial console
        upper/<container-id>/       overlay upper and work dirs (host only)
        share/                      the ONLY host directory shared into the VM
            containers/<id>/rootfs  the container's overlay rootfs, mounted on the host
            containers/<id>/volumes/<n>  bind mounts of the container's kubelet volumes
            containers/<id>/image-volumes/<n>  read-only views of images it mounts
        exits/<id>.json             how a container ended, written by the host

The guest mounts ``share/`` at :data:`GUEST_SHARE`; nothing else of the host is
visible to it. 9p shows mounts below a shared directory, which is exactly how
rootfs overlays and volumes reach the guest, and why the share is per pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GUEST_SHARE = "/run/vmcri/shared"


MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class SandboxLayout:
    base: Path

    @property
    def agent_socket(self) -> Path:
        return self.base.parent / "sockets" / f"{self.base.name[:16]}.agent"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def share(self) -> Path:
        return self.base / "share"

    def rootfs(self, container_id: str) -> Path:
        return self.share / "containers" / container_id / "rootfs"

    def volume(self, container_id: str, index: int) -> Path:
        return self.share / "containers" / container_id / "volumes" / str(index)

    def image_volume(self, container_id: str, index: int) -> Path:
        return self.share / "containers" / container_id / "image-volumes" / str(index)

    def container_share(self, container_id: str) -> Path:
        return self.share / "containers" / container_id

    def upper(self, container_id: str) -> Path:
        return self.base / "upper" / container_id

    def exit_file(self, container_id: str) -> Path:
        return self.base / "exits" / f"{container_id}.json"

    def guest_path(self, host_path: Path) -> str:
        """The guest path of a host path inside the share."""
        return f"{GUEST_SHARE}/{host_path.relative_to(self.share)}"
