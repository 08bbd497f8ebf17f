"""The services a request handler and a backend can reach, wired once by the daemon."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.config import Config
from vmcri.handlers.base import ImageInfo
from vmcri.handlers.registry import HandlerRegistry
from vmcri.network.service import PodNetworking
from vmcri.nri.hooks import NoNri, NriHooks
from vmcri.runtime.events import EventBus
from vmcri.runtime.usage_bounds import MAX_MEMORY_BYTES
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store


class ImageSource(Protocol):
    """What the runtime needs of the image service."""

    def image_for_container(self, ref: str) -> ImageInfo:
        """The pulled image named by ``ref`` (tag, digest or ID); raises NotFound."""
        ...


@dataclass
class RuntimeNetwork:
    """Network facts kubelet tells us through UpdateRuntimeConfig."""

    pod_cidr: str = ""


@dataclass
class Services:
    config: Config
    store: Store
    events: EventBus
    images: ImageSource | None = None
    handlers: HandlerRegistry | None = None
    network: RuntimeNetwork = field(default_factory=RuntimeNetwork)
    # The pod network layer (netns + CNI); None: pods get no network set up by the runtime
    # (unit tests with fake backends).
    networking: PodNetworking | None = None
    clock: Callable[[], int] = time.time_ns
    # No memory figure of a usage sample may pass it (vmcri.runtime.usage_bounds): the
    # daemon sets the host's MemTotal, which no pod (runc or VM) can have more than.
    memory_bound: int = MAX_MEMORY_BYTES
    # Called with a container ID when a backend has recorded its exit (the container
    # service folds it into the record and wakes a waiting StopContainer).
    exit_listeners: list[Callable[[str], None]] = field(default_factory=list)
    # NRI plugins' hooks at each pod and container event (vmcri.nri); a no-op when disabled.
    nri: NriHooks = field(default_factory=NoNri)

    # ---- vmcri.handlers.services.BackendServices --------------------------------------

    def find_container(self, container_id: str) -> ContainerRecord | None:
        found = self.store.containers.find(container_id)
        return found if found is not None and found.id == container_id else None

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return self.store.containers_of(sandbox_id)

    def container_exited(self, container_id: str) -> None:
        for listener in list(self.exit_listeners):
            listener(container_id)

    def find_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        found = self.store.sandboxes.find(sandbox_id)
        return found if found is not None and found.id == sandbox_id else None

    def update_sandbox_runtime(self, sandbox_id: str, values: Mapping[str, str]) -> SandboxRecord:
        return self.store.sandboxes.update(
            sandbox_id, lambda r: dataclasses.replace(r, runtime={**r.runtime, **values})
        )

    def registry(self) -> HandlerRegistry:
        assert self.handlers is not None, "handlers are wired at start-up"
        return self.handlers

    def image_source(self) -> ImageSource:
        assert self.images is not None, "the image service is wired at start-up"
        return self.images
