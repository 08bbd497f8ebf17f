"""A wired runtime (real store, event bus, services) over a fake backend and image source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmcri.config import parse_config_text
from vmcri.cri.rpc_common import RuntimeServices
from vmcri.cri.runtime_service import RuntimeServicer
from vmcri.handlers.base import (
    ContainerLiveness,
    ContainerUsage,
    HandlerFeatures,
    ImageInfo,
    SandboxStarted,
)
from vmcri.handlers.registry import Handler, HandlerRegistry
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
    """Runs nothing; containers run from start until stop, usage comes from ``usage``."""

    running: set[str] = field(default_factory=set)
    usage: dict[str, ContainerUsage] = field(default_factory=dict)
    updates: list[tuple[str, Resources]] = field(default_factory=list)
    handler_features: HandlerFeatures = field(default_factory=HandlerFeatures)

    def features(self) -> HandlerFeatures:
        return self.handler_features

    def conditions(self) -> Sequence[Any]:
        return ()

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        return SandboxStarted()

    def stop_sandbox(self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]) -> None:
        for c in containers:
            self.running.discard(c.id)

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

    def stop_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, timeout_s: int
    ) -> None:
        self.running.discard(container.id)

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        pass

    def container_liveness(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerLiveness:
        return ContainerLiveness(running=container.id in self.running)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        self.updates.append((container.id, resources))

    def container_usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        return self.usage[container.id]


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
    any_backend: Any = backend
    services = Services(
        config=parse_config_text(""),
        store=Store(tmp / "state"),
        events=EventBus(),
        images=FakeImages(image),
        handlers=HandlerRegistry({"runc": Handler("runc", "runc", any_backend)}, "runc"),
    )
    containers = ContainerService(services)
    pods = PodService(services, containers)
    runtime = RuntimeServices(
        pods=pods,
        containers=containers,
        info=RuntimeInfo(services),
        events=services.events,
        # Never started: the edge asks it for URLs only.
        streaming=StreamingService(services, containers, services.config.streaming),
    )
    return Runtime(backend, services, pods, containers, runtime, RuntimeServicer(runtime))
