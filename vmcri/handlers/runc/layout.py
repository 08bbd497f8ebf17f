"""Where the runc backend keeps its files.

Runtime state (``BackendContext.state``, gone after a reboot like the containers)::

    sandboxes/<id>/ns/{user,net,ipc,uts,pid}   bind-mounted namespace files
    sandboxes/<id>/{hostname,hosts,resolv.conf}
    sandboxes/<id>/shm/           the pod's /dev/shm tmpfs
    sandboxes/<id>/pause.pid      init of the pod's PID namespace, when shared
    sandboxes/<id>/exits/<c>.json how each container ended (vmcri.supervisor.exits)
    agents/<id>/                  the pod's host agent: its state (bundles, runc --root),
                                  pid and log (vmcri.handlers.runc.host_agent)
    zygote/zygote.log             the log of the process that forks the agents and podinit
                                  (vmcri.handlers.runc.zygote)
    containers/<id>/rootfs/       the overlay mount point runc gets as the root
    containers/<id>/image-volumes/<n>   read-only views of images mounted into it
    containers/<id>/idmapped-mounts/<n> ID-mapped clones of its volumes (user namespace pods)

Persistent data (``BackendContext.root``): ``containers/<id>/{upper,work}``, the
writable layer, kept on a disk file system (overlayfs cannot use every fs as upper).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vmcri.errors import InvalidArgument

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_id(ident: str, what: str) -> str:
    """IDs become path components: refuse anything that is not a plain name."""
    if not _ID.match(ident) or ident in (".", ".."):
        raise InvalidArgument(f"{what}: {ident!r} is not a valid ID")
    return ident


@dataclass(frozen=True)
class Layout:
    state: Path
    root: Path

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.state / "sandboxes" / check_id(sandbox_id, "sandbox id")

    def ns_path(self, sandbox_id: str, kind: str) -> Path:
        return self.sandbox_dir(sandbox_id) / "ns" / kind

    def container_dir(self, container_id: str) -> Path:
        return self.state / "containers" / check_id(container_id, "container id")

    def rootfs(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "rootfs"

    def image_volumes_dir(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "image-volumes"

    def staged_mounts_dir(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "idmapped-mounts"

    def layer_dir(self, container_id: str) -> Path:
        return self.root / "containers" / check_id(container_id, "container id")
