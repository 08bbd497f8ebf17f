"""A pod's host-side directories: its share, its writable disk, their removal.

``VmPodDirs`` is the part of ``VmBackend`` (backend.py) that makes and removes what a
pod has on the host (``layout.py`` says where): the host-only directories, the pod's
read-only share of them (its volumes), the writable disk sized against the host's disk
(``layer_budget.py``; the guest mounts it, see ``disks.py``), and the pod's own mount
namespace, where its volumes are bound.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from vmcri.errors import HostCommandError
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.layer_budget import layer_size
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.handlers.vm.options import VmOptions
from vmcri.host import layer_space
from vmcri.host.mounts import Mounter, mount_points
from vmcri.store.records import SandboxRecord

log = logging.getLogger(__name__)


class VmPodDirs:
    """The pods' host-side files; a part of ``VmBackend``, which sets what is declared here."""

    _options: VmOptions
    _context: BackendContext
    _state: Path
    _hypervisor: Hypervisor
    _mounter: Mounter
    _private_ready: bool

    def _layout(self, sandbox_id: str) -> SandboxLayout:
        return SandboxLayout(self._state / sandbox_id, self._context.root / sandbox_id)

    def _ensure_private_root(self) -> None:
        # Each pod's mounts propagate to its own share (and the copies of it in the mount
        # namespaces libvirt gives QEMU and virtiofsd) through a peer group of its own; a
        # private parent keeps them from spreading into every other mount namespace.
        if not self._private_ready:
            self._mounter.make_private(self._state)
            self._private_ready = True

    def _prepare_dirs(self, layout: SandboxLayout) -> int:
        """The pod's host-only directories, its share, and its sized writable disk (an empty
        ext4 file); returns its size in MiB (0: none). Raises ResourceExhausted (no
        disk left for it, see layer_budget.py), HostCommandError."""
        for d in (layout.base, layout.exits, layout.jail, layout.disk, layout.layer_links):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.agent_socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._mounter.share_readonly(layout.mounts, layout.share, layout.mount_namespace)
        if not self._options.writable_layer_mib:
            return 0  # the containers' upper dirs stay in the guest's memory
        wanted = self._options.writable_layer_mib
        with layer_space.ALLOCATION:  # until the new layer's file exists, and counts
            space = self._layer_space()
            size = layer_size(space, wanted, self._options.writable_layer_reserve_mib)
            if size < wanted:
                log.warning(
                    "pod writable layer sized down to %d MiB (writable_layer_mib = %d): "
                    "%d MiB free, %d MiB still promised to %d pods' layers, %d MiB reserve",
                    size, wanted, space.free_bytes >> 20, space.claimable_bytes >> 20,
                    space.layers, self._options.writable_layer_reserve_mib,
                )  # fmt: skip
            # Made here, before the guest ever sees it; then only the guest mounts it.
            self._mounter.fs_image(layout.writable_image, size)
        return size

    def _layer_space(self) -> layer_space.LayerSpace:
        """The pods' layers (every handler's: ``<root>/backends``) against the free disk."""
        try:
            return layer_space.measure(self._context.root.parent)
        except OSError as exc:
            raise HostCommandError(f"disk space under {self._context.root}: {exc}") from exc

    def _pod_namespace(self, layout: SandboxLayout) -> Path | None:
        """The pod's mount namespace, where its volumes are bound; None for a pod made
        before pods had one (its volumes are bound here, as they were)."""
        pin = layout.mount_namespace
        return pin if pin in mount_points(pin) else None

    def _release_share(self, sandbox_id: str, layout: SandboxLayout) -> None:
        """Once the pod's file server runs, the host's own copy of the share stops following
        the pod's mounts: the copies in the namespaces libvirt gave QEMU (and virtiofsd)
        still do, so a volume's mounts (a tmpfs in a hostPath) never sit on a node
        directory in the host's namespace, where they would keep it busy (EBUSY). A QEMU in
        the host's own namespace (libvirt's ``namespaces`` off) serves the host's copy,
        which then keeps following."""
        qemu = self._hypervisor.mount_namespace(domain_name(sandbox_id))
        if qemu and qemu != os.readlink("/proc/self/ns/mnt"):
            self._mounter.release_share(layout.share)
        else:
            log.warning(
                "sandbox %s: QEMU runs in the host's mount namespace (or its namespace is "
                "unknown): the host keeps copies of the pod's volume mounts, which keep the "
                "node's directories below a hostPath busy",
                sandbox_id,
            )

    def _remove_dirs(self, layout: SandboxLayout) -> None:
        """Every mount and file of the pod on the host, once its VM is gone; idempotent.
        Raises HostCommandError (and deletes nothing) while anything is still mounted."""
        # Raises (and deletes nothing) while anything is still mounted: never delete through
        # a mount, a volume's files least of all. The pod's namespace first: its pin goes
        # with the rest below base.
        namespace = self._pod_namespace(layout)
        if namespace is not None:
            self._mounter.unmount_below(layout.mounts, namespace)
        self._mounter.unmount_below(layout.base)
        self._mounter.unmount_below(layout.disk)
        # rmtree works through directory fds and never follows the guest's symlinks.
        shutil.rmtree(layout.base, ignore_errors=True)
        shutil.rmtree(layout.disk, ignore_errors=True)
        layout.agent_socket.unlink(missing_ok=True)

    def _release_container(self, sandbox: SandboxRecord, container_id: str) -> None:
        layout = self._layout(sandbox.id)
        namespace = self._pod_namespace(layout)
        if namespace is not None:
            self._mounter.unmount_below(layout.container_mounts(container_id), namespace)
        self._mounter.unmount_below(layout.container_mounts(container_id))
        shutil.rmtree(layout.container_mounts(container_id), ignore_errors=True)
        shutil.rmtree(layout.upper(container_id), ignore_errors=True)
