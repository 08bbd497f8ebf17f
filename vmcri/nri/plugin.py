"""One NRI plugin: its connection, registration, configuration and bounded calls.

Lifecycle (as NRI's adaptation): connect -> the plugin calls RegisterPlugin within the
registration timeout -> we call Configure (its answer is the plugin's event subscription)
-> we call Synchronize with every pod and container -> it gets the events it subscribed
to, until it or we close the connection.

A plugin is a client like any other. Every call is bounded by the request timeout and
ttrpc's 4 MiB; a plugin that does not answer in time, stops reading, answers what does not
parse or breaks the protocol is disconnected (its launched process killed) and named in
the log, and the event goes on without it, as NRI does for such "fatal" errors. A plugin
that answers with an error status has refused the event: that is the caller's to decide
(the lifecycle call fails).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from vmcri.api import nri_pb2
from vmcri.errors import PluginError, ProtocolError
from vmcri.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from vmcri.nri.told import Told
from vmcri.nri.ttrpc import CallTimeout, RemoteError, TtrpcClient, TtrpcServer
from vmcri.nri.ttrpc_frames import MAX_BODY

log = logging.getLogger(__name__)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
NRI_VERSION = "v0.9.0"
"""The NRI API version vmcri's messages follow (told to plugins in Configure)."""

LAST_EVENT = nri_pb2.LAST
VALID_EVENTS = (1 << (LAST_EVENT - 1)) - 1
"""Every event bit NRI defines: event e is bit e - 1."""
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
INDEX_RE = re.compile(r"^[0-9]{2}$")
UNIMPLEMENTED = 12

M = TypeVar("M", bound=Message)
UpdateHandler = Callable[[str, nri_pb2.UpdateContainersRequest], nri_pb2.UpdateContainersResponse]
"""A plugin's UpdateContainers: its name and the request."""


def event_bit(event: int) -> int:
    return 1 << (event - 1)


class Plugin:
    """A connected plugin. ``idx`` and ``base`` are known at launch for pre-installed
    plugins, and from RegisterPlugin for external ones."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        request_timeout_s: float,
        registration_timeout_s: float,
        on_update: UpdateHandler,
        idx: str = "",
        base: str = "",
        config: str = "",
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.idx = idx
        self.base = base
        self.config = config
        self.process = process
        self.events = 0
        self.told = Told()  # what it heard of as it joined: each object once
        self.request_timeout_s = request_timeout_s
        self.registration_timeout_s = registration_timeout_s
        self._on_update = on_update
        self._registered = threading.Event()
        self._register_error = ""
        self.mux = Mux(sock, self.name, request_timeout_s)
        self.mux.on_close.append(self._on_close)
        self._client = TtrpcClient(self.mux, PLUGIN_SERVICE_CONN)
        TtrpcServer(
            self.mux,
            RUNTIME_SERVICE_CONN,
            RUNTIME_SERVICE,
            {"RegisterPlugin": self._register, "UpdateContainers": self._update_containers},
        )

    @property
    def name(self) -> str:
        return f"{self.idx or '??'}-{self.base or 'plugin'}"

    @property
    def external(self) -> bool:
        return self.process is None

    @property
    def closed(self) -> bool:
        return self.mux.closed

    def subscribed(self, event: int) -> bool:
        return bool(self.events & event_bit(event))

    # ---- start-up ---------------------------------------------------------------------

    def start(self, runtime_name: str, runtime_version: str) -> None:
        """Wait for RegisterPlugin, then Configure. Raises PluginError (the plugin is
        closed then)."""
        self.mux.start()
        if not self._registered.wait(self.registration_timeout_s) or self.closed:
            why = self._register_error or (
                self.mux.close_reason if self.closed else "registration timed out"
            )
            self.close(f"not registered: {why}")
            raise PluginError(f"NRI plugin {self.name}: not registered: {why}")
        if self._register_error:
            self.close(self._register_error)
            raise PluginError(f"NRI plugin {self.name}: {self._register_error}")
        request = nri_pb2.ConfigureRequest(
            config=self.config,
            runtime_name=runtime_name,
            runtime_version=runtime_version,
            registration_timeout=int(self.registration_timeout_s * 1000),
            request_timeout=int(self.request_timeout_s * 1000),
            NRI_version=NRI_VERSION,
        )
        reply = self.call("Configure", request, nri_pb2.ConfigureResponse)
        if reply is None:
            raise PluginError(f"NRI plugin {self.name}: Configure failed")
        events = reply.events & 0xFFFFFFFF
        if events & ~VALID_EVENTS:
            self.close(f"subscribed to unknown events 0x{events & ~VALID_EVENTS:x}")
            raise PluginError(f"NRI plugin {self.name}: invalid event subscription")
        self.events = events or VALID_EVENTS
        log.info("NRI plugin %s: configured, events 0x%x", self.name, self.events)

    def _register(self, payload: bytes) -> bytes:
        request = nri_pb2.RegisterPluginRequest.FromString(payload)
        if self.external:
            if not NAME_RE.match(request.plugin_name):
                self._register_error = f"invalid plugin name {request.plugin_name[:64]!r}"
            elif not INDEX_RE.match(request.plugin_idx):
                self._register_error = f"invalid plugin index {request.plugin_idx[:8]!r}"
            else:
                self.base, self.idx = request.plugin_name, request.plugin_idx
                self.mux.name = self.name
        log.info("NRI plugin %s: registered", self.name)
        self._registered.set()
        if self._register_error:
            raise PluginError(self._register_error)
        return nri_pb2.Empty().SerializeToString()

    def _update_containers(self, payload: bytes) -> bytes:
        if not self._registered.is_set():
            raise PluginError("UpdateContainers before RegisterPlugin")
        request = nri_pb2.UpdateContainersRequest.FromString(payload)
        log.info(
            "NRI plugin %s: asks to update %d and evict %d containers",
            self.name,
            len(request.update),
            len(request.evict),
        )
        return self._on_update(self.name, request).SerializeToString()

    # ---- calls ------------------------------------------------------------------------

    def call(self, method: str, request: Message, reply_type: type[M]) -> M | None:
        """The plugin's answer; None when the plugin was disconnected for it (timeout,
        connection lost, garbage). Raises PluginError when the plugin refused."""
        if self.closed:
            return None
        if request.ByteSize() > MAX_BODY - 1024:
            # Ours, not the plugin's fault: refuse the event, keep the plugin.
            raise PluginError(f"NRI: a {method} request over ttrpc's {MAX_BODY}-byte bound")
        try:
            payload = self._client.call(
                PLUGIN_SERVICE, method, request.SerializeToString(), self.request_timeout_s
            )
            return reply_type.FromString(payload)
        except RemoteError as exc:
            if exc.code == UNIMPLEMENTED:
                return None  # an older stub without this RPC: nothing to say, not a refusal
            raise PluginError(f"NRI plugin {self.name}: {method} refused: {exc.message}") from exc
        except CallTimeout as exc:
            self.close(str(exc))
        except (ConnectionError, ProtocolError, DecodeError) as exc:
            self.close(f"{method}: {exc}")
        return None

    def synchronize(
        self, pods: list[nri_pb2.PodSandbox], containers: list[nri_pb2.Container]
    ) -> list[nri_pb2.ContainerUpdate] | None:
        """Send the runtime's state, split into messages under ttrpc's bound (``more``
        set on all but the last). The plugin's updates; None if it was disconnected.
        Raises PluginError when it refused."""
        batches = _split(pods, containers)
        updates: list[nri_pb2.ContainerUpdate] = []
        for i, (some_pods, some_containers) in enumerate(batches):
            more = i < len(batches) - 1
            request = nri_pb2.SynchronizeRequest(
                pods=some_pods, containers=some_containers, more=more
            )
            reply = self.call("Synchronize", request, nri_pb2.SynchronizeResponse)
            if reply is None:
                return None
            if more and (reply.update or not reply.more):
                self.close("does not handle a split Synchronize")
                return None
            updates.extend(reply.update)
        return updates

    def shutdown(self) -> None:
        """Tell it we are going down (bounded), then close."""
        if not self.closed:
            with contextlib.suppress(PluginError):
                self.call("Shutdown", nri_pb2.Empty(), nri_pb2.Empty)
        self.close("vmcri is shutting down")

    def close(self, reason: str) -> None:
        self.mux.close(reason)

    def _on_close(self, reason: str) -> None:
        log.warning("NRI plugin %s: disconnected: %s", self.name, reason)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                log.error("NRI plugin %s: pid %d did not die", self.name, self.process.pid)


def _split(
    pods: list[nri_pb2.PodSandbox], containers: list[nri_pb2.Container]
) -> list[tuple[list[nri_pb2.PodSandbox], list[nri_pb2.Container]]]:
    """Pods then containers in batches, each batch's message well under MAX_BODY."""
    budget = MAX_BODY // 2
    batches: list[tuple[list[nri_pb2.PodSandbox], list[nri_pb2.Container]]] = []
    cur_pods: list[nri_pb2.PodSandbox] = []
    cur_containers: list[nri_pb2.Container] = []
    size = 0
    for item in [*pods, *containers]:
        n = item.ByteSize() + 8
        if size + n > budget and (cur_pods or cur_containers):
            batches.append((cur_pods, cur_containers))
            cur_pods, cur_containers, size = [], [], 0
        if isinstance(item, nri_pb2.PodSandbox):
            cur_pods.append(item)
        elif isinstance(item, nri_pb2.Container):
            cur_containers.append(item)
        size += n
    batches.append((cur_pods, cur_containers))
    return batches
