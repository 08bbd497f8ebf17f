"""A wired runtime (real store, event bus, services) over a fake backend and image source."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmcri.checkpoint.service import CheckpointService
from vmcri.config import parse_config_text
from vmcri.cri.rpc_common import RuntimeServices
from vmcri.cri.runtime_service import RuntimeServicer
from vmcri.errors import Unimplemented
from vmcri.handlers.base import (
    Condition,
    ContainerExit,
    ContainerLiveness,
    ContainerUsage,
    ExecResult,
    HandlerFeatures,
    ImageInfo,
    PortConnection,
    ProcessSession,
    SandboxBackend,
    SandboxStarted,
)
from vmcri.handlers.registry import Handler, HandlerRegistry
from vmcri.handlers.services import BackendServices
from vmcri.model import Resources
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.runtime.events import EventBus
from vmcri.runtime.info import RuntimeInfo
from vmcri.runtime.pods import PodService
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store
from vmcri.streaming.service import StreamingService


@dataclass
class FakeBackend:
    """A ``SandboxBackend`` that runs nothing. A started container runs until a signal it
    does not ignore (``ignored``) ends it; its exit is reported as a real backend does,
    through ``BackendServices.container_exited``. Usage comes from ``usage``."""

    services: BackendServices | None = None
    running: set[str] = field(default_factory=set)
    exits: dict[str, ContainerExit] = field(default_factory=dict)
    signals: list[tuple[str, int]] = field(default_factory=list)
    ignored: set[int] = field(default_factory=set)
    usage: dict[str, ContainerUsage] = field(default_factory=dict)
    updates: list[tuple[str, Resources]] = field(default_factory=list)
    handler_features: HandlerFeatures = field(default_factory=HandlerFeatures)

    def end(self, container_id: str, code: int, reason: str = "") -> None:
        """The container ends by itself (or by a signal): record it, tell the runtime."""
        self.running.discard(container_id)
        if container_id not in self.exits:
            self.exits[container_id] = ContainerExit(code, time.time_ns(), reason)
            assert self.services is not None, "wire() sets the services"
            self.services.container_exited(container_id)

    def features(self) -> HandlerFeatures:
        return self.handler_features

    def conditions(self) -> Sequence[Condition]:
        return ()

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        return SandboxStarted()

    def stop_sandbox(self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]) -> None:
        for c in containers:
            if c.id in self.running:
                self.end(c.id, 137, "Error")

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        return True

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        return {}

    def start_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        self.running.add(container.id)
        return 4242

    def signal_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, signum: int
    ) -> None:
        self.signals.append((container.id, signum))
        if signum not in self.ignored and container.id not in self.exits:
            self.end(container.id, 128 + signum)

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        self.exits.pop(container.id, None)

    def container_liveness(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerLiveness:
        return ContainerLiveness(
            running=container.id in self.running, exit=self.exits.get(container.id)
        )

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        return ExecResult(b"", b"", 0)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        self.updates.append((container.id, resources))

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        self.updates.append((sandbox.id, resources))

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        pass

    def container_usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        return self.usage[container.id]

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        raise Unimplemented("the fake backend streams nothing")

    def attach_supported(self) -> bool:
        return False

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        raise Unimplemented("the fake backend streams nothing")

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        raise Unimplemented("the fake backend streams nothing")


@dataclass
class FakeImages:
    image: ImageInfo

    def image_for_container(self, ref: str) -> ImageInfo:
        return self.image


@dataclass
class Runtime:
    backend: FakeBackend
    services: Services
    pods: PodService
    containers: ContainerService
    runtime: RuntimeServices  # what the edge gets, as the daemon wires it
    servicer: RuntimeServicer


def wire(tmp: Path, image: ImageInfo) -> Runtime:
    backend = FakeBackend()
    services = Services(
        config=parse_config_text(""),
        store=Store(tmp / "state"),
        events=EventBus(),
        images=FakeImages(image),
        handlers=HandlerRegistry({"runc": Handler("runc", "runc", backend)}, "runc"),
    )
    backend.services = services
    containers = ContainerService(services)
    pods = PodService(services, containers)
    runtime = RuntimeServices(
        pods=pods,
        containers=containers,
        info=RuntimeInfo(services),
        events=services.events,
        # Never started: the edge asks it for URLs only.
        streaming=StreamingService(services, containers, services.config.streaming),
        checkpoints=CheckpointService(services, pods, containers),
    )
    return Runtime(backend, services, pods, containers, runtime, RuntimeServicer(runtime))


_: type[SandboxBackend] = FakeBackend  # mypy checks that the fake fulfils the Protocol
