"""The plugins that are in, in call order, and how one gets in.

A plugin gets in (:meth:`PluginSet.join`) once it has registered, been configured and
synchronized with every pod and container; it is told afterwards of the pods and
containers made while it synchronized. No lock holds events back meanwhile; the plugin's
:class:`~vmcri.nri.told.Told` makes each object reach it once, by whichever of the
snapshot, its event and the catch-up comes first, and none is missed: an event that went
out before the plugin was in the list was about an object already in the store, which
the catch-up (reading the store after the plugin is in) finds. Closed plugins leave the
list the next time it is read. Plugins are called in ascending index, then name, order.
"""

from __future__ import annotations

import logging
import threading

from vmcri import __version__
from vmcri.api import nri_pb2
from vmcri.errors import PluginError
from vmcri.nri.convert import pod_message, record_message
from vmcri.nri.plugin import Plugin
from vmcri.nri.updates import Updates
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store

log = logging.getLogger(__name__)

RUNTIME_NAME = "vmcri"
MAX_PLUGINS = 32
"""Plugins connected at once; a connection over it is closed at once."""


class PluginSet:
    def __init__(self, store: Store, updates: Updates) -> None:
        self._store = store
        self._updates = updates
        self._lock = threading.Lock()
        self._plugins: list[Plugin] = []

    def live(self) -> list[Plugin]:
        """The live plugins in call order."""
        with self._lock:
            self._plugins = [p for p in self._plugins if not p.closed]
            return list(self._plugins)

    def take_all(self) -> list[Plugin]:
        with self._lock:
            plugins, self._plugins = self._plugins, []
        return plugins

    def join(self, plugin: Plugin) -> None:
        """Start, synchronize and add ``plugin``; a plugin that fails is closed and logged."""
        if len(self.live()) >= MAX_PLUGINS:
            plugin.close(f"{MAX_PLUGINS} plugins are connected already")
            return
        try:
            plugin.start(RUNTIME_NAME, __version__)
            pods = [pod_message(s) for s in self._store.sandboxes.list()]
            containers = [record_message(c) for c in self._store.containers.list()]
            plugin.told.synchronized([*(p.id for p in pods), *(c.id for c in containers)])
            updates = plugin.synchronize(pods, containers)
        except PluginError as exc:
            log.error("%s", exc.message)
            plugin.close(exc.message)
            return
        if updates is None:
            return
        with self._lock:
            self._plugins.append(plugin)
            self._plugins.sort(key=lambda p: (p.idx, p.base))
        log.info(
            "NRI plugin %s: synchronized, %d pods, %d containers",
            plugin.name,
            len(pods),
            len(containers),
        )
        self._updates.apply(updates, strict=False)
        self._catch_up(plugin)
        plugin.told.joined()

    def _catch_up(self, plugin: Plugin) -> None:
        """RunPodSandbox and PostCreateContainer for each object nothing told it of yet."""
        for sandbox in self._store.sandboxes.list():
            if plugin.subscribed(nri_pb2.RUN_POD_SANDBOX) and plugin.told.catch_up(sandbox.id):
                _tell(plugin, nri_pb2.RUN_POD_SANDBOX, sandbox, None)
        for record in self._store.containers.list():
            pod = self._store.sandboxes.find(record.sandbox_id)
            if pod is None or not plugin.subscribed(nri_pb2.POST_CREATE_CONTAINER):
                continue
            if plugin.told.catch_up(record.id):
                _tell(plugin, nri_pb2.POST_CREATE_CONTAINER, pod, record)


def _tell(
    plugin: Plugin, event: int, sandbox: SandboxRecord, record: ContainerRecord | None
) -> None:
    message = nri_pb2.StateChangeEvent(event=event, pod=pod_message(sandbox))  # type: ignore[arg-type]
    if record is not None:
        message.container.CopyFrom(record_message(record))
    try:
        plugin.call("StateChange", message, nri_pb2.Empty)
    except PluginError as exc:
        log.warning("%s (ignored)", exc.message)
