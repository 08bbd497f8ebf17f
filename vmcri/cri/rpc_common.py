"""What the RuntimeService RPC groups share: the services they call and small helpers.

The edge gets the runtime's services, never the daemon: each is already the seam
that hides the store and the backends, and unit tests drive them over a fake
backend. Of the streaming service the edge needs only its URLs, hence a Protocol.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from vmcri.runtime.checkpoints.service import CheckpointService
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.events import EventBus
from vmcri.runtime.info import RuntimeInfo
from vmcri.runtime.pods import PodService
from vmcri.store.codec import to_jsonable
from vmcri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest

Ctx = grpc.ServicerContext


def deadline_of(context: Ctx | None) -> float | None:
    """The RPC's deadline on the ``time.monotonic()`` clock; None when it has none."""
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining


T = TypeVar("T")

# Items per message of the Stream* forms of the list RPCs: far below gRPC's
# 4 MiB default message limit even for containers with large label sets.
STREAM_CHUNK = 256


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """The list in pieces of STREAM_CHUNK; an empty list is one empty piece, so the
    client always gets one answer, as the unary form would give."""
    size = STREAM_CHUNK
    if not items:
        yield items
        return
    for start in range(0, len(items), size):
        yield items[start : start + size]


def verbose_info(value: Any) -> dict[str, str]:
    return {"info": json.dumps(to_jsonable(value))}


class StreamingUrls(Protocol):
    """The streaming service as Exec, Attach and PortForward see it."""

    def exec_url(self, request: ExecRequest) -> str: ...

    def attach_url(self, request: AttachRequest) -> str: ...

    def port_forward_url(self, request: PortForwardRequest) -> str: ...


@dataclass(frozen=True)
class RuntimeServices:
    """Every service the RuntimeService's RPCs call, wired once by the daemon."""

    pods: PodService
    containers: ContainerService
    info: RuntimeInfo
    events: EventBus
    streaming: StreamingUrls
    checkpoints: CheckpointService


class Rpcs:
    """Base of every RPC group: the services they call into."""

    def __init__(self, services: RuntimeServices) -> None:
        self._pods = services.pods
        self._containers = services.containers
        self._info = services.info
        self._events = services.events
        self._streaming = services.streaming
        self._checkpoints = services.checkpoints
