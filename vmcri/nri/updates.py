"""Resource updates plugins ask for, of containers other than the one an event is about
(in CreateContainer, UpdateContainer and StopContainer answers, and unsolicited through
UpdateContainers), applied through the container service. Evictions asked for in
UpdateContainers go to evictions.py, which carries them out off the plugin's thread.

An update runs the container service's ordinary UpdateContainerResources path, which
would call the plugins again; while one is applied, :attr:`Updates.active` is set on the
applying thread and the adaptation sends that update to no plugin (NRI does not relay a
plugin's own updates either).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from vmcri.api import nri_pb2
from vmcri.errors import PluginError, VmcriError
from vmcri.model import Resources
from vmcri.nri.adjust import resources_from
from vmcri.nri.evictions import Evictions
from vmcri.store.store import Store

log = logging.getLogger(__name__)

Updater = Callable[[str, Resources], None]
"""Applies new resources to a container; raises VmcriError."""


class Updates:
    def __init__(self, store: Store, updater: Updater, evictions: Evictions) -> None:
        self._store = store
        self._updater = updater
        self._evictions = evictions
        self._local = threading.local()

    @property
    def active(self) -> bool:
        """Whether this thread is applying a plugin's update."""
        return bool(getattr(self._local, "active", False))

    def apply(
        self, updates: Iterable[nri_pb2.ContainerUpdate], strict: bool
    ) -> list[nri_pb2.ContainerUpdate]:
        """Apply them; returns the failed ones. With ``strict``, a failed update the plugin
        did not mark ignore_failure raises PluginError (the event that asked for it fails)."""
        failed = []
        for update in updates:
            try:
                record = self._store.containers.get(update.container_id)
                resources = resources_from(update.linux.resources, record.config.resources)
                self._local.active = True
                try:
                    self._updater(record.id, resources)
                finally:
                    self._local.active = False
            except VmcriError as exc:
                log.warning(
                    "NRI: update of container %s failed: %s", update.container_id, exc.message
                )
                failed.append(update)
                if strict and not update.ignore_failure:
                    raise PluginError(
                        f"NRI: requested update of container {update.container_id} failed: "
                        f"{exc.message}"
                    ) from exc
        return failed

    def unsolicited(
        self, plugin: str, request: nri_pb2.UpdateContainersRequest
    ) -> nri_pb2.UpdateContainersResponse:
        """``plugin``'s UpdateContainers call: its evictions are queued (never waited for:
        the plugin may be answering an event that waits on it), its updates applied."""
        self._evictions.request(plugin, list(request.evict))
        return nri_pb2.UpdateContainersResponse(failed=self.apply(list(request.update), False))
