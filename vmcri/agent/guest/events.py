"""Numbered events kept until the host acknowledges them.

The host may be away (daemon restart) while containers keep writing and exiting. Events are
kept, numbered, until an Ack or a Hello says the host has them, and replayed to each new
connection. Output is bounded: past ``max_bytes`` the oldest output chunks are dropped (and
counted); exit events are never dropped, their number is bounded by the containers' number.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from vmcri.api import agent_pb2

DEFAULT_MAX_BYTES = 8 << 20


class EventLog:
    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.cond = threading.Condition()
        self._max_bytes = max_bytes
        self._clock = clock
        self._events: deque[tuple[int, bool, bytes]] = deque()  # (seq, is_output, body)
        self._bytes = 0
        self.last_seq = 0
        self.dropped = 0

    def append(self, fill: Callable[[agent_pb2.Event], None]) -> int:
        """Number a new event (``fill`` sets its kind) and wake the connection's writer."""
        event = agent_pb2.Event()
        fill(event)
        with self.cond:
            self.last_seq += 1
            event.seq = self.last_seq
            event.timestamp_ns = self._clock()
            body = event.SerializeToString()
            self._events.append((event.seq, event.HasField("output"), body))
            self._bytes += len(body)
            self._trim()
            self.cond.notify_all()
            return event.seq

    def ack(self, seq: int) -> None:
        """The host has every event up to ``seq``: forget them."""
        with self.cond:
            while self._events and self._events[0][0] <= seq:
                self._bytes -= len(self._events.popleft()[2])

    def since(self, seq: int) -> list[tuple[int, bytes]]:
        """Serialized events newer than ``seq``, oldest first. Caller holds ``cond``."""
        return [(s, body) for s, _, body in self._events if s > seq]

    def _trim(self) -> None:
        if self._bytes <= self._max_bytes:
            return
        kept: deque[tuple[int, bool, bytes]] = deque()
        for item in self._events:
            if self._bytes > self._max_bytes and item[1]:
                self._bytes -= len(item[2])
                self.dropped += 1
            else:
                kept.append(item)
        self._events = kept
