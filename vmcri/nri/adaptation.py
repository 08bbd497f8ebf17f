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

How a plugin joins is plugin_set.py's; container exits reach plugins through
stop_relay.py; updates plugins ask for of other containers, updates.py; evictions they ask
for, evictions.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import socket
import subprocess
from collections.abc import Callable, Iterator

from vmcri.api import nri_pb2
from vmcri.config import NriConfig
from vmcri.errors import PluginError
from vmcri.model import Resources
from vmcri.nri import adjust, launcher
from vmcri.nri.convert import container_message, pod_message, record_message, resources_message
from vmcri.nri.evictions import Evictions, Stopper
from vmcri.nri.listener import Listener
from vmcri.nri.merge import CreateResult
from vmcri.nri.plugin import Plugin
from vmcri.nri.plugin_set import PluginSet
from vmcri.nri.stop_relay import StopRelay
from vmcri.nri.updates import Updater, Updates
from vmcri.nri.validation import validate
from vmcri.store.records import ContainerRecord, SandboxRecord, SandboxState
from vmcri.store.store import Store

log = logging.getLogger(__name__)

_restoring: contextvars.ContextVar[bool] = contextvars.ContextVar("nri_restoring", default=False)


class Adaptation:
    def __init__(
        self,
        config: NriConfig,
        store: Store,
        updater: Updater,
        stopper: Stopper,
        in_guest: Callable[[SandboxRecord], bool],
    ) -> None:
        self._config = config
        self._store = store
        self._in_guest = in_guest
        self._evictions = Evictions(store, stopper)
        self._updates = Updates(store, updater, self._evictions)
        self._plugins = PluginSet(store, self._updates)
        self._stops = StopRelay(self._stop_container)
        self._listener: Listener | None = None

    # ---- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        """Start the pre-installed plugins, then listen for others. Raises OSError when the
        socket cannot be made."""
        self._stops.start()
        self._evictions.start()
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
        for plugin in self._plugins.take_all():
            plugin.shutdown()
        self._stops.stop()
        self._evictions.stop()

    def _accept(self, sock: socket.socket) -> None:
        self._connect(sock, "", "", "", None)

    def _connect(
        self,
        sock: socket.socket,
        idx: str,
        base: str,
        config: str,
        process: subprocess.Popen[bytes] | None,
    ) -> None:
        plugin = Plugin(
            sock,
            request_timeout_s=self._config.request_timeout_s,
            registration_timeout_s=self._config.registration_timeout_s,
            on_update=self._updates.unsolicited,
            idx=idx,
            base=base,
            config=config,
            process=process,
        )
        self._plugins.join(plugin)

    def plugins(self) -> list[Plugin]:
        """The live plugins in call order."""
        return self._plugins.live()

    def _subscribed(self, event: int) -> list[Plugin]:
        if self._updates.active:
            return []  # a plugin's own update does not go round the plugins again
        return [p for p in self._plugins.live() if p.subscribed(event)]

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
        about = container.id if container is not None else sandbox.id
        for plugin in plugins:
            if not plugin.told.claim(about, event):
                continue  # it heard of it as it joined
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

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        token = _restoring.set(True)
        try:
            yield
        finally:
            _restoring.reset(token)

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
        validators = self._subscribed(nri_pb2.VALIDATE_CONTAINER_ADJUSTMENT)
        if not plugins and not validators:
            return record
        request = nri_pb2.CreateContainerRequest(
            pod=pod_message(sandbox),
            container=container_message(record.id, sandbox.id, record.config),
        )
        result = CreateResult(record.id)
        consulted: list[Plugin] = []
        try:
            for plugin in plugins:
                if not plugin.told.claim(record.id, nri_pb2.CREATE_CONTAINER):
                    continue
                consulted.append(plugin)
                reply = plugin.call("CreateContainer", request, nri_pb2.CreateContainerResponse)
                if reply is None:
                    continue
                result.add_adjustment(plugin.name, reply.adjust)
                result.add_updates(plugin.name, list(reply.update))
                result.add_evictions(plugin.name, list(reply.evict))
            validate(request, result, consulted, validators)
            if _restoring.get():
                adjust.refuse_for_restore(result.adjust)
            config = adjust.apply(record.config, result.adjust, self._in_guest(sandbox))
            self._updates.apply(result.updates.values(), strict=True)
        except PluginError:
            self.remove_container(record)  # the plugins saw it: it will not exist
            raise
        self._evict(result, creating=record.id)
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
            result.add_evictions(plugin.name, list(reply.evict))
        own = result.updates.pop(record.id, None)
        if own is not None:
            resources = adjust.resources_from(own.linux.resources, resources)
        self._updates.apply(result.updates.values(), strict=True)
        self._evict(result)
        return resources

    def _evict(self, result: CreateResult, creating: str = "") -> None:
        """Queue the evictions an event's answers asked for (carried out off this thread)."""
        for name, eviction in result.evictions:
            self._evictions.request(name, [eviction], creating)

    def container_stopped(self, record: ContainerRecord) -> None:
        self._stops.push(record)

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
        self._updates.apply(result.updates.values(), strict=False)

    def _drain_stops(self) -> None:
        """Let the stops queued so far reach the plugins first (bounded: a stop takes at
        most one request timeout per plugin)."""
        self._stops.drain(self._config.request_timeout_s * (len(self.plugins()) + 1))
