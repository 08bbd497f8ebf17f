"""Container lifecycle events for GetContainerEvents, fanned out to every subscriber."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum


class EventType(Enum):
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True)
class ContainerEvent:
    container_id: str
    sandbox_id: str
    type: EventType
    created_at: int  # ns


class EventBus:
    """Bounded per-subscriber queues; a subscriber that falls too far behind loses events."""

    def __init__(self, max_backlog: int = 1024) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[ContainerEvent | None]] = []
        self._max_backlog = max_backlog

    def publish(self, event: ContainerEvent) -> None:
        with self._lock:
            for q in self._subscribers:
                with contextlib.suppress(queue.Full):
                    q.put_nowait(event)

    def subscribe(self, stop: threading.Event) -> Iterator[ContainerEvent]:
        q: queue.Queue[ContainerEvent | None] = queue.Queue(self._max_backlog)
        with self._lock:
            self._subscribers.append(q)
        try:
            while not stop.is_set():
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield item
        finally:
            with self._lock:
                self._subscribers.remove(q)

    def close(self) -> None:
        with self._lock:
            for q in self._subscribers:
                with contextlib.suppress(queue.Full):
                    q.put_nowait(None)
