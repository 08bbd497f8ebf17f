"""The connected NRI plugins, called in index order at each pod and container event.

Events go to each plugin subscribed to them, in ascending index (then name) order, as
NRI documents. Adjusting events (CreateContainer, UpdateContainer, StopContainer) use
their own RPCs; the others go through StateChange. A plugin's refusal fails the lifecycle
call where NRI's runtimes fail it (RunPodSandbox, CreateContainer, StartContainer,
UpdateContainer) and is logged elsewhere (teardown and Post* events never fail for it).

No lock is held while a plugin is called: the list of plugins is copied under a short
lock, each call is bounded by the request timeout, and a plugin that times out or breaks
the protocol is disconnected and dropped from the list, so one plugin delays an event
by at most one request timeout, once, and never blocks other pods' calls behind it.

A plugin that connects is registered and configured, then synchronized with every pod
and container, and only then sees events. Container exits reach plugins (StopContainer)
from a worker thread, in order, so the thread that noticed the exit never waits; events
that follow a container's stop (RemoveContainer, RemovePodSandbox) wait for the worker
to pass it, bounded.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable

from vmcri import __version__
from vmcri.api import nri_pb2
from vmcri.config import NriConfig
from vmcri.errors import PluginError, VmcriError
from vmcri.model import Resources
from vmcri.nri import adjust, launcher
from vmcri.nri.convert import container_message, pod_message, record_message, resources_message
from vmcri.nri.listener import Listener
from vmcri.nri.merge import CreateResult
from vmcri.nri.plugin import Plugin
from vmcri.store.records import ContainerRecord, SandboxRecord, SandboxState
from vmcri.store.store import Store

log = logging.getLogger(__name__)

RUNTIME_NAME = "vmcri"
MAX_PLUGINS = 32
"""Plugins connected at once; a connection over it is closed at once."""
MAX_QUEUED_STOPS = 1024

Updater = Callable[[str, Resources], None]
"""Applies new resources to a container (without NRI hooks); raises VmcriError."""


class Adaptation:
    def __init__(
        self,
        config: NriConfig,
        store: Store,
        updater: Updater,
        in_guest: Callable[[SandboxRecord], bool],
    ) -> None:
        self._config = config
        self._store = store
        self._updater = updater
        self._in_guest = in_guest
        self._lock = threading.Lock()
        self._plugins: list[Plugin] = []
        self._listener: Listener | None = None
        self._stops: queue.Queue[ContainerRecord | None] = queue.Queue(MAX_QUEUED_STOPS)
        self._stops_done = threading.Condition()
        self._queued = 0  # stops queued so far, and of them handled (under _stops_done)
        self._handled = 0
        self._worker = threading.Thread(target=self._stop_worker, name="nri-stops", daemon=True)
        self._unsolicited = threading.local()

    # ---- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        """Start the pre-installed plugins, then listen for others. Raises OSError when the
        socket cannot be made."""
        self._worker.start()
        for found in launcher.discover(self._config.plugin_path, self._config.plugin_config_path):
            try:
                sock, process = launcher.launch(found)
            except OSError as exc:
                log.error("NRI plugin %s: cannot start it: %s", found.path, exc)
                continue
            self._connect(sock, found.idx, found.base, found.config, process)
        if not self._config.disable_connections:
            self._listener = Listener(self._config.socket_path, self._accept)
            self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        with self._lock:
            plugins, self._plugins = self._plugins, []
        for plugin in plugins:
            plugin.shutdown()
        self._stops.put(None)

    def _accept(self, sock: socket.socket) -> None:
        self._connect(sock, "", "", "", None)

    def _connect(
        self,
        sock: socket.socket,
        idx: str,
        base: str,
        config: str,
        process: object,
    ) -> None:
        plugin = Plugin(
            sock,
            request_timeout_s=self._config.request_timeout_s,
            registration_timeout_s=self._config.registration_timeout_s,
            on_update=self._update_containers,
            idx=idx,
            base=base,
            config=config,
            process=process,  # type: ignore[arg-type]
        )
        with self._lock:
            full = len(self._plugins) >= MAX_PLUGINS
        if full:
            plugin.close(f"{MAX_PLUGINS} plugins are connected already")
            return
        try:
            plugin.start(RUNTIME_NAME, __version__)
            pods = [pod_message(s) for s in self._store.sandboxes.list()]
            containers = [record_message(c) for c in self._store.containers.list()]
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
        self._apply_updates(updates, strict=False)
        self._catch_up(plugin, {p.id for p in pods}, {c.id for c in containers})

    def _catch_up(self, plugin: Plugin, pods: set[str], containers: set[str]) -> None:
        """Tell a plugin just added of the pods and containers made while it synchronized
        (no lock holds events back meanwhile): RunPodSandbox and PostCreateContainer for
        each that its snapshot missed. One made just as the plugin was added may so be
        told twice; none is missed."""
        for sandbox in self._store.sandboxes.list():
            if sandbox.id not in pods and plugin.subscribed(nri_pb2.RUN_POD_SANDBOX):
                self._tell(plugin, nri_pb2.RUN_POD_SANDBOX, sandbox, None)
        for record in self._store.containers.list():
            pod = self._store.sandboxes.find(record.sandbox_id)
            if record.id in containers or pod is None:
                continue
            if plugin.subscribed(nri_pb2.POST_CREATE_CONTAINER):
                self._tell(plugin, nri_pb2.POST_CREATE_CONTAINER, pod, record)

    def _tell(
        self, plugin: Plugin, event: int, sandbox: SandboxRecord, record: ContainerRecord | None
    ) -> None:
        message = nri_pb2.StateChangeEvent(event=event, pod=pod_message(sandbox))  # type: ignore[arg-type]
        if record is not None:
            message.container.CopyFrom(record_message(record))
        try:
            plugin.call("StateChange", message, nri_pb2.Empty)
        except PluginError as exc:
            log.warning("%s (ignored)", exc.message)

    def plugins(self) -> list[Plugin]:
        """The live plugins in call order (closed ones are dropped here)."""
        with self._lock:
            self._plugins = [p for p in self._plugins if not p.closed]
            return list(self._plugins)

    def _subscribed(self, event: int) -> list[Plugin]:
        if getattr(self._unsolicited, "active", False):
            return []  # a plugin's own UpdateContainers does not go round the plugins again
        return [p for p in self.plugins() if p.subscribed(event)]

    # ---- notifications ----------------------------------------------------------------

    def _notify(
        self,
        event: int,
        sandbox: SandboxRecord,
        container: nri_pb2.Container | None,
        fail: bool,
    ) -> None:
        plugins = self._subscribed(event)
        if not plugins:
            return
        message = nri_pb2.StateChangeEvent(event=event, pod=pod_message(sandbox))  # type: ignore[arg-type]
        if container is not None:
            message.container.CopyFrom(container)
        for plugin in plugins:
            try:
                plugin.call("StateChange", message, nri_pb2.Empty)
            except PluginError as exc:
                if fail:
                    raise
                log.warning("%s (event %s; ignored)", exc.message, nri_pb2.Event.Name(event))  # type: ignore[arg-type]

    def run_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        try:
            self._notify(nri_pb2.RUN_POD_SANDBOX, sandbox, None, fail=True)
        except PluginError:
            # The plugins before the refusing one saw the pod start: it will not exist.
            self._notify(nri_pb2.REMOVE_POD_SANDBOX, sandbox, None, fail=False)
            raise

    def stop_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        if sandbox.state is SandboxState.READY:
            self._notify(nri_pb2.STOP_POD_SANDBOX, sandbox, None, fail=False)

    def remove_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        self._drain_stops()
        self._notify(nri_pb2.REMOVE_POD_SANDBOX, sandbox, None, fail=False)

    def post_create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        self._notify(nri_pb2.POST_CREATE_CONTAINER, sandbox, record_message(record), fail=False)

    def start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        self._notify(nri_pb2.START_CONTAINER, sandbox, record_message(record), fail=True)

    def post_start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        self._notify(nri_pb2.POST_START_CONTAINER, sandbox, record_message(record), fail=False)

    def post_update_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        self._notify(nri_pb2.POST_UPDATE_CONTAINER, sandbox, record_message(record), fail=False)

    def remove_container(self, record: ContainerRecord) -> None:
        self._drain_stops()
        sandbox = self._store.sandboxes.find(record.sandbox_id)
        if sandbox is not None:
            self._notify(nri_pb2.REMOVE_CONTAINER, sandbox, record_message(record), fail=False)

    def update_pod_sandbox(
        self, sandbox: SandboxRecord, overhead: Resources | None, resources: Resources | None
    ) -> None:
        request = nri_pb2.UpdatePodSandboxRequest(pod=pod_message(sandbox))
        if overhead is not None:
            request.overhead_linux_resources.CopyFrom(resources_message(overhead))
        if resources is not None:
            request.linux_resources.CopyFrom(resources_message(resources))
        for plugin in self._subscribed(nri_pb2.UPDATE_POD_SANDBOX):
            plugin.call("UpdatePodSandbox", request, nri_pb2.UpdatePodSandboxResponse)

    def post_update_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        request = nri_pb2.PostUpdatePodSandboxRequest(pod=pod_message(sandbox))
        for plugin in self._subscribed(nri_pb2.POST_UPDATE_POD_SANDBOX):
            try:
                plugin.call("PostUpdatePodSandbox", request, nri_pb2.PostUpdatePodSandboxResponse)
            except PluginError as exc:
                log.warning("%s (ignored)", exc.message)

    # ---- adjusting events -------------------------------------------------------------

    def create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> ContainerRecord:
        plugins = self._subscribed(nri_pb2.CREATE_CONTAINER)
        if not plugins:
            return record
        request = nri_pb2.CreateContainerRequest(
            pod=pod_message(sandbox),
            container=container_message(record.id, sandbox.id, record.config),
        )
        result = CreateResult(record.id)
        try:
            for plugin in plugins:
                reply = plugin.call("CreateContainer", request, nri_pb2.CreateContainerResponse)
                if reply is None:
                    continue
                result.add_adjustment(plugin.name, reply.adjust)
                result.add_updates(plugin.name, list(reply.update))
                result.add_evictions(list(reply.evict))
            config = adjust.apply(record.config, result.adjust, self._in_guest(sandbox))
            self._evict(result.evictions)
            self._apply_updates(result.updates.values(), strict=True)
        except PluginError:
            self.remove_container(record)  # the plugins saw it: it will not exist
            raise
        return dataclasses.replace(record, config=config)

    def update_container(
        self, sandbox: SandboxRecord, record: ContainerRecord, resources: Resources
    ) -> Resources:
        plugins = self._subscribed(nri_pb2.UPDATE_CONTAINER)
        if not plugins:
            return resources
        request = nri_pb2.UpdateContainerRequest(
            pod=pod_message(sandbox),
            container=record_message(record),
            linux_resources=resources_message(resources),
        )
        result = CreateResult(record.id)
        for plugin in plugins:
            reply = plugin.call("UpdateContainer", request, nri_pb2.UpdateContainerResponse)
            if reply is None:
                continue
            result.add_updates(plugin.name, list(reply.update))
            result.add_evictions(list(reply.evict))
        own = result.updates.pop(record.id, None)
        if own is not None:
            resources = adjust.resources_from(own.linux.resources, resources)
        self._evict(result.evictions)
        self._apply_updates(result.updates.values(), strict=True)
        return resources

    def container_stopped(self, record: ContainerRecord) -> None:
        try:
            with self._stops_done:
                self._stops.put_nowait(record)
                self._queued += 1
        except queue.Full:
            log.error(
                "NRI: %d container stops queued; plugins miss %s's", MAX_QUEUED_STOPS, record.id
            )

    def _stop_worker(self) -> None:
        while True:
            record = self._stops.get()
            try:
                if record is None:
                    return
                self._stop_container(record)
            except Exception:
                log.exception("NRI: StopContainer of %s failed", record.id if record else "")
            finally:
                with self._stops_done:
                    self._handled += 1
                    self._stops_done.notify_all()

    def _stop_container(self, record: ContainerRecord) -> None:
        sandbox = self._store.sandboxes.find(record.sandbox_id)
        if sandbox is None:
            return
        request = nri_pb2.StopContainerRequest(
            pod=pod_message(sandbox), container=record_message(record)
        )
        result = CreateResult(record.id)
        for plugin in self._subscribed(nri_pb2.STOP_CONTAINER):
            try:
                reply = plugin.call("StopContainer", request, nri_pb2.StopContainerResponse)
                if reply is not None:
                    result.add_updates(plugin.name, list(reply.update))
            except PluginError as exc:
                log.warning("%s (ignored)", exc.message)
        result.updates.pop(record.id, None)
        self._apply_updates(result.updates.values(), strict=False)

    def _drain_stops(self) -> None:
        """Let the stops queued so far reach the plugins first (bounded: a stop takes at
        most one request timeout per plugin)."""
        if not self._worker.is_alive():
            return
        bound = self._config.request_timeout_s * (len(self.plugins()) + 1)
        with self._stops_done:
            target = self._queued
            self._stops_done.wait_for(lambda: self._handled >= target, bound)

    # ---- updates to other containers -----------------------------------------------------

    def _apply_updates(
        self, updates: Iterable[nri_pb2.ContainerUpdate], strict: bool
    ) -> list[nri_pb2.ContainerUpdate]:
        """Apply plugin-requested resource updates. With ``strict``, a failed update that
        the plugin did not mark ignore_failure raises PluginError. Returns the failed ones."""
        failed = []
        for update in updates:
            try:
                record = self._store.containers.get(update.container_id)
                resources = adjust.resources_from(update.linux.resources, record.config.resources)
                self._unsolicited.active = True
                try:
                    self._updater(record.id, resources)
                finally:
                    self._unsolicited.active = False
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

    def _update_containers(
        self, request: nri_pb2.UpdateContainersRequest
    ) -> nri_pb2.UpdateContainersResponse:
        self._evict(list(request.evict))
        failed = self._apply_updates(list(request.update), strict=False)
        return nri_pb2.UpdateContainersResponse(failed=failed)

    def _evict(self, evictions: list[nri_pb2.ContainerEviction]) -> None:
        for eviction in evictions:
            # Not carried out: vmcri does not stop containers on a plugin's word. Said, so
            # a plugin's operator sees it, rather than dropped.
            log.error(
                "NRI: eviction of container %s (%s) requested; vmcri does not evict",
                eviction.container_id,
                eviction.reason[:256],
            )
