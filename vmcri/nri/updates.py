"""Resource updates plugins ask for, of containers other than the one an event is about
(in CreateContainer, UpdateContainer and StopContainer answers, and unsolicited through
UpdateContainers), applied through the container service.

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
from vmcri.store.store import Store

log = logging.getLogger(__name__)

Updater = Callable[[str, Resources], None]
"""Applies new resources to a container; raises VmcriError."""


class Updates:
    def __init__(self, store: Store, updater: Updater) -> None:
        self._store = store
        self._updater = updater
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
        self, request: nri_pb2.UpdateContainersRequest
    ) -> nri_pb2.UpdateContainersResponse:
        """A plugin's UpdateContainers call."""
        evict(list(request.evict))
        return nri_pb2.UpdateContainersResponse(failed=self.apply(list(request.update), False))


def evict(evictions: list[nri_pb2.ContainerEviction]) -> None:
    for eviction in evictions:
        # Not carried out: vmcri does not stop containers on a plugin's word. Said, so a
        # plugin's operator sees it, rather than dropped.
        log.error(
            "NRI: eviction of container %s (%s) requested; vmcri does not evict",
            eviction.container_id,
            eviction.reason[:256],
        )
