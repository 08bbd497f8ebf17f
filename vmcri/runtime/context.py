"""The services a request handler can reach, wired once by the daemon."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.config import Config
from vmcri.handlers.registry import HandlerRegistry
from vmcri.images.auth import Deadline as PullDeadline
from vmcri.model import ImageInfo
from vmcri.network.service import PodNetworking
from vmcri.nri.hooks import NoNri, NriHooks
from vmcri.runtime.events import EventBus
from vmcri.runtime.exits import ContainerExits
from vmcri.runtime.usage_bounds import MAX_MEMORY_BYTES
from vmcri.store.store import Store


class ImageSource(Protocol):
    """What the runtime needs of the image service."""

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        """The pulled image named by ``ref`` (tag, digest or ID), if the signature policy
        of ``namespace`` accepts it; raises NotFound, SignatureRefused."""
        ...

    def pull(self, ref: str, *, deadline: PullDeadline | None = None, namespace: str = "") -> str:
        """Pull ``ref`` without credentials (a RestorePod whose image is not here); its ID.
        Raises like ``vmcri.images.service.ImageService.pull``."""
        ...


@dataclass
class RuntimeNetwork:
    """Network facts kubelet tells us through UpdateRuntimeConfig."""

    pod_cidr: str = ""


@dataclass(frozen=True)
class Services:
    """Complete when built: the daemon makes the store, the exit folding and the backends'
    view of the records first, then the handlers over them, then this."""

    config: Config
    store: Store
    events: EventBus
    exits: ContainerExits  # the one place a container becomes EXITED
    images: ImageSource
    handlers: HandlerRegistry
    network: RuntimeNetwork = field(default_factory=RuntimeNetwork)
    # The pod network layer (netns + CNI); None: pods get no network set up by the runtime
    # (unit tests with fake backends).
    networking: PodNetworking | None = None
    clock: Callable[[], int] = time.time_ns
    # No memory figure of a usage sample may pass it (vmcri.runtime.usage_bounds): the
    # daemon sets the host's MemTotal, which no pod (runc or VM) can have more than.
    memory_bound: int = MAX_MEMORY_BYTES
    # NRI plugins' hooks at each pod and container event (vmcri.nri); a no-op when disabled.
    nri: NriHooks = field(default_factory=NoNri)
