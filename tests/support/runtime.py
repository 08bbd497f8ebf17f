"""A wired runtime (real store, event bus, exit folding, services) over a fake backend, a
fake supervisor and a fake image source."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmcri.config import parse_config_text
from vmcri.cri.rpc_common import RuntimeServices
from vmcri.cri.runtime_service import RuntimeServicer
from vmcri.errors import NotFound, Unimplemented
from vmcri.handlers.base import HandlerFeatures, SandboxBackend, SandboxStarted
from vmcri.handlers.checkpointer import PodCheckpointer
from vmcri.handlers.registry import Handler, HandlerRegistry
from vmcri.ids import new_id
from vmcri.model import Condition, ImageInfo, PodConfig, Resources
from vmcri.nri.hooks import NriHooks
from vmcri.runtime.backend_records import BackendRecords
from vmcri.runtime.checkpoints.service import CheckpointService
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.runtime.events import EventBus
from vmcri.runtime.exits import ContainerExits
from vmcri.runtime.info import RuntimeInfo
from vmcri.runtime.pods import PodService
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store
from vmcri.streaming.service import StreamingService
from vmcri.supervisor.api import (
    ContainerExit,
    ContainerLiveness,
    ContainerRecords,
    ContainerSupervisor,
    ContainerUsage,
    ExecResult,
    PortConnection,
    ProcessSession,
)


@dataclass
class FakeSupervisor:
    """A ``ContainerSupervisor`` that runs nothing. A started container runs until a signal
    it does not ignore (``ignored``) ends it; its exit is sent up as the real supervisor
    sends it, once, through ``ContainerRecords.container_exited``. Usage comes from
    ``samples``."""

    records: ContainerRecords
    running: dict[str, str] = field(default_factory=dict)  # container ID -> sandbox ID
    exits: dict[str, ContainerExit] = field(default_factory=dict)
    signals: list[tuple[str, int]] = field(default_factory=list)
    ignored: set[int] = field(default_factory=set)
    samples: dict[str, ContainerUsage] = field(default_factory=dict)

    def end(self, container_id: str, code: int, reason: str = "") -> None:
        """The container ends by itself (or by a signal): keep it, send it up."""
        self.running.pop(container_id, None)
        if container_id not in self.exits:
            self.exits[container_id] = ContainerExit(code, time.time_ns(), reason)
            self.records.container_exited(container_id, self.exits[container_id])

    def end_pod(self, sandbox_id: str, code: int, reason: str) -> None:
        for container_id in [c for c, s in self.running.items() if s == sandbox_id]:
            self.end(container_id, code, reason)

    def start(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        self.running[container.id] = sandbox.id
        return 4242

    def signal(self, sandbox: SandboxRecord, container: ContainerRecord, signum: int) -> None:
        self.signals.append((container.id, signum))
        if signum not in self.ignored and container.id not in self.exits:
            self.end(container.id, 128 + signum)

    def liveness(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerLiveness:
        return ContainerLiveness(running=container.id in self.running)

    def recorded_exit(self, sandbox: SandboxRecord, container_id: str) -> ContainerExit | None:
        return self.exits.get(container_id)

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        return ExecResult(b"", b"", 0)

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        pass

    def usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        return self.samples[container.id]

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        raise Unimplemented("the fake supervisor streams nothing")

    def attach_supported(self) -> bool:
        return False

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        raise Unimplemented("the fake supervisor streams nothing")


@dataclass
class FakeBackend:
    """A ``SandboxBackend`` that runs nothing; its pods' containers are ``supervisor``'s."""

    supervisor: FakeSupervisor
    updates: list[tuple[str, Resources]] = field(default_factory=list)
    handler_features: HandlerFeatures = field(default_factory=HandlerFeatures)

    def features(self) -> HandlerFeatures:
        return self.handler_features

    def conditions(self) -> Sequence[Condition]:
        return ()

    def new_sandbox_id(self, config: PodConfig) -> str:
        return new_id()

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        return SandboxStarted()

    def stop_sandbox(self, sandbox: SandboxRecord) -> None:
        self.supervisor.end_pod(sandbox.id, 137, "Error")

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        return True

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        return {}

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        self.supervisor.exits.pop(container.id, None)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        self.updates.append((container.id, resources))

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        self.updates.append((sandbox.id, resources))

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        raise Unimplemented("the fake backend streams nothing")


@dataclass
class FakeImages:
    image: ImageInfo

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        return self.image

    def pull(self, ref: str, *, deadline: object = None, namespace: str = "") -> str:
        return self.image.id


class NoImages:
    """An image service with nothing pulled."""

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        raise NotFound(f"image {ref!r} is not pulled")

    def pull(self, ref: str, *, deadline: object = None, namespace: str = "") -> str:
        raise NotFound(f"image {ref!r}: no registry here")


@dataclass
class Runtime:
    backend: FakeBackend
    supervisor: FakeSupervisor
    services: Services
    pods: PodService
    containers: ContainerService
    runtime: RuntimeServices  # what the edge gets, as the daemon wires it
    servicer: RuntimeServicer


def wire(
    tmp: Path,
    image: ImageInfo,
    checkpointer: Callable[[FakeSupervisor], PodCheckpointer] | None = None,
    nri: Callable[[Store], NriHooks] | None = None,
    **services: Any,
) -> Runtime:
    """``services``: fields of ``Services`` other than the defaults here (networking,
    images, config, memory_bound ...), as the daemon would build it; ``checkpointer``
    makes the handler's part of checkpoints from the fake supervisor (none: the default
    refusal); ``nri`` makes the NRI hooks from the store (none: NRI off)."""
    store = Store(tmp / "state")
    if nri is not None:
        services["nri"] = nri(store)
    events = EventBus()
    exits = ContainerExits(store, events, time.time_ns)
    supervisor = FakeSupervisor(BackendRecords(store, exits))
    backend = FakeBackend(supervisor)
    handler = (
        Handler("runc", "runc", backend)
        if checkpointer is None
        else Handler("runc", "runc", backend, checkpointer(supervisor))
    )
    fields: dict[str, Any] = {
        "config": parse_config_text(""),
        "images": FakeImages(image),
        "handlers": HandlerRegistry({"runc": handler}, "runc"),
        **services,
    }
    built = Services(store=store, events=events, exits=exits, **fields)
    containers = ContainerService(built)
    pods = PodService(built, containers)
    runtime = RuntimeServices(
        pods=pods,
        containers=containers,
        info=RuntimeInfo(built),
        events=events,
        # Never started: the edge asks it for URLs only.
        streaming=StreamingService(built, containers, built.config.streaming),
        checkpoints=CheckpointService(built, pods, containers),
    )
    return Runtime(backend, supervisor, built, pods, containers, runtime, RuntimeServicer(runtime))


_: type[SandboxBackend] = FakeBackend  # mypy checks that the fakes fulfil the Protocols
__: type[ContainerSupervisor] = FakeSupervisor
