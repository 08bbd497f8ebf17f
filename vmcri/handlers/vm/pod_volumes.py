"""A VM pod's kubelet volumes that live in its guest, not on its share.

``VmPodVolumes`` is the part of ``VmBackend`` (backend.py) that places each of a
container's volumes that qualifies (``guest_volumes.py``: emptyDirs, small read-only
configMap/secret/projected/downwardAPI volumes, the pod's /etc/hosts) in the guest, before
the container is made, and keeps the copied ones in sync (``volume_sync.py``). What it
does not place goes to the share as before (``volumes.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING

from vmcri.agent.types import VolumeKind
from vmcri.errors import Unimplemented
from vmcri.handlers.vm.guest_volumes import GuestVolume, Snapshot, TooBig, guest_volume, read_volume
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.handlers.vm.volume_sync import CALL_TIMEOUT_S, Push, VolumeSync
from vmcri.model import Mount
from vmcri.oci.userns import owner_outside
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.containers import SupervisedContainers

log = logging.getLogger(__name__)
EMPTY_DIRS = (VolumeKind.EMPTY_DIR, VolumeKind.EMPTY_DIR_MEMORY)

RECORD = "guest-volumes.json"


class VmPodVolumes:
    """A part of ``VmBackend``, which sets what is declared here."""

    _containers: SupervisedContainers

    if TYPE_CHECKING:

        def _layout(self, sandbox_id: str) -> SandboxLayout: ...

    @functools.cached_property
    def _volume_sync(self) -> VolumeSync:
        return VolumeSync()

    def _place_in_guest(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> dict[int, Mount]:
        """Make each of the container's guest-local volumes in the guest (an emptyDir the
        pod has already is kept); returns mount index -> the mount as the guest binds it.
        A volume too big to copy, or unreadable, is left out (it goes to the share).

        Raises the agent's errors (the guest could not make it) but Unimplemented (an
        agent from before SyncVolume: nothing is placed)."""
        placed: dict[int, Mount] = {}
        record = self._layout(sandbox.id).base / RECORD
        push = self._pusher(sandbox)
        for i, mount in enumerate(container.config.mounts):
            volume = guest_volume(mount)
            if volume is None or not self._volume_sync.fits(sandbox.id, volume):
                continue
            try:
                snapshot = read_volume(volume)
            except (TooBig, OSError) as exc:
                log.info("sandbox %s: volume %s stays on the share: %s", sandbox.id,
                         mount.host_path, exc)  # fmt: skip
                continue
            try:
                path = push(volume, snapshot)
            except Unimplemented:
                # A pod started before its agent had SyncVolume: all on the share, as then.
                log.info("sandbox %s: its agent keeps no volumes; they stay on the share",
                         sandbox.id)  # fmt: skip
                return {}
            self._volume_sync.add(sandbox.id, volume, push, snapshot.digest, record)
            placed[i] = dataclasses.replace(mount, host_path=path)
        return placed

    def _watch_adopted(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """A container restored from a checkpoint: its guest volumes are there already (the
        guest's memory and disk came back); watch them from this pod's own host paths, and
        send each once (their content on this node may differ)."""
        record = self._layout(sandbox.id).base / RECORD
        for mount in container.config.mounts:
            volume = guest_volume(mount)
            if volume is not None and self._volume_sync.fits(sandbox.id, volume):
                self._volume_sync.add(sandbox.id, volume, self._pusher(sandbox), None, record)

    def _watch_again(self, sandbox: SandboxRecord) -> None:
        """After a daemon restart: go on syncing what the pod's record names."""
        record = self._layout(sandbox.id).base / RECORD
        self._volume_sync.load(sandbox.id, record, self._pusher(sandbox))

    def in_guest(self, sandbox_id: str, host_path: str) -> bool:
        """Whether the pod keeps the volume at ``host_path`` in its guest."""
        return self._volume_sync.has(sandbox_id, host_path)

    def _forget_volumes(self, sandbox_id: str) -> None:
        self._volume_sync.forget(sandbox_id)

    def _pusher(self, sandbox: SandboxRecord) -> Push:
        opts = sandbox.config.security.namespace_options

        def push(volume: GuestVolume, snapshot: Snapshot) -> str:
            client = self._containers.link(sandbox).client
            files = snapshot.files
            if volume.kind not in EMPTY_DIRS:
                # A copy on the guest's tmpfs, which 6.1 cannot ID-map: in a pod with its
                # own user namespace its files are written with the owners the pod's
                # containers should see, mapped (the guest ID-maps emptyDirs itself).
                files = tuple(
                    dataclasses.replace(f, uid=uid, gid=gid)
                    for f in files
                    for uid, gid in [owner_outside(f.uid, f.gid, opts)]
                )
            return client.sync_volume(
                volume.name, volume.kind, files,
                size_bytes=snapshot.size_bytes, timeout=CALL_TIMEOUT_S,
            )  # fmt: skip

        return push
