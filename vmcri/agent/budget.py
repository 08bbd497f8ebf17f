"""One pod's byte budget for agent events held in host memory.

Everything the guest sends and the host keeps for a while (the client's dispatch queue,
the stream router's backlog of unclaimed exec output, the queues of streaming sessions)
is charged to the pod's one :class:`ByteBudget`, so a hostile guest can make the host
hold at most ``POD_EVENT_BUDGET`` bytes of its events, whatever their number or size.

Who waits and who gives up when the budget is spent::

    dispatch queue   (a share of READER_SHARE) the reader waits up to READER_WAIT_S for
                     room, then drops the connection (the guest replays what was not
                     acknowledged, after the reconnect)
    stream backlog   (a share, streams.BACKLOG_BYTES) never waits: evicts its oldest
                     entries, else drops the event
    session queues   (the rest) wait up to streams.STALL_S, then the session is dropped

The dispatch queue may hold only a share of the budget so that the sessions behind it
always find room for what the dispatcher hands them: the reader cannot starve them, and
a session that does not read cannot stop the queue either (it is dropped first).
"""

from __future__ import annotations

import threading
import time

from vmcri.agent import types

POD_EVENT_BUDGET = 4 << 20
"""Bytes of events one pod may have queued on the host (4 MiB: 16 maximal output chunks)."""
READER_SHARE = POD_EVENT_BUDGET // 2
"""The reader queues events only while the pod's total is below this."""
READER_WAIT_S = 10.0
"""Longer than a session's stall limit (5 s), so a slow session is dropped first."""
EVENT_OVERHEAD = 1024
"""Bytes charged per event on top of its data: objects cost memory, empty events too."""


def event_cost(event: types.AgentEvent) -> int:
    """What holding ``event`` costs the budget."""
    if isinstance(event, types.OutputChunk | types.PortForwardData):
        return EVENT_OVERHEAD + len(event.data)
    return EVENT_OVERHEAD


class ByteBudget:
    """A counter of bytes held, with a capacity; thread-safe.

    :meth:`share` makes a part with a smaller capacity of its own: charging it charges the
    whole too, and a charge fits only where it fits both.
    """

    def __init__(self, capacity: int = POD_EVENT_BUDGET, *, _parent: ByteBudget | None = None):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._used = 0
        self.peak = 0
        """The most ever held at once (for tests and metrics)."""
        self._parent = _parent
        self._cond: threading.Condition = _parent._cond if _parent else threading.Condition()

    def share(self, capacity: int) -> ByteBudget:
        """A part of this budget that may hold at most ``capacity`` bytes of it."""
        return ByteBudget(min(capacity, self.capacity), _parent=self)

    @property
    def used(self) -> int:
        return self._used

    def try_acquire(self, amount: int) -> bool:
        """Charge ``amount`` if it fits now."""
        return self.acquire(amount, 0.0)

    def acquire(self, amount: int, timeout: float) -> bool:
        """Charge ``amount``, waiting up to ``timeout`` seconds for room.

        Returns False when there was no room in time, or never can be (amount > capacity).
        """
        if amount > self.capacity:
            return False
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._fits(amount):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            budget: ByteBudget | None = self
            while budget is not None:
                budget._used += amount
                budget.peak = max(budget.peak, budget._used)
                budget = budget._parent
            return True

    def release(self, amount: int) -> None:
        with self._cond:
            budget: ByteBudget | None = self
            while budget is not None:
                budget._used = max(0, budget._used - amount)
                budget = budget._parent
            self._cond.notify_all()

    def _fits(self, amount: int) -> bool:
        budget: ByteBudget | None = self
        while budget is not None:
            if budget._used + amount > budget.capacity:
                return False
            budget = budget._parent
        return True
