"""What the RuntimeService RPC groups share: the daemon handle and small helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from vmcri.store.codec import to_jsonable

if TYPE_CHECKING:
    from vmcri.daemon import Daemon

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


class Rpcs:
    """Base of every RPC group: each holds the daemon it calls into."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon
