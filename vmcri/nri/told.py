"""What one plugin has been told of the pods and containers that existed as it joined, so
that it hears of each exactly once.

A plugin hears of a pod by Synchronize, by its RunPodSandbox event or by the catch-up
after Synchronize (plugin_set.py); of a container by Synchronize, by CreateContainer /
PostCreateContainer or by the catch-up's PostCreateContainer. No lock holds events back
while a plugin joins (a plugin may take a request timeout per message to synchronize), so
an object made just then can be in the snapshot and still have its creation event reach
the plugin, or be caught up and reach it by its event too. Each of those deliveries first
claims the object here, atomically: the first one tells, the others are skipped.

    RUN_POD_SANDBOX, CREATE_CONTAINER, catch-up    told only if nothing was told before
    POST_CREATE_CONTAINER                           told unless Synchronize or the catch-up
                                                    told it (after CreateContainer it is
                                                    the next step, not a repeat)
    REMOVE_POD_SANDBOX, REMOVE_CONTAINER            always told; the mark is dropped (kept
                                                    as "gone" while joining, so the catch-up
                                                    does not tell of it after its removal)

Marks are made only while the plugin joins (from the snapshot until the catch-up ends):
after that a new object cannot be told twice. The marks left are the snapshot's and the
catch-up's objects, dropped as they are removed: bounded by what existed at the join.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from vmcri.api import nri_pb2

_SYNCED = "synced"  # in Synchronize or the catch-up
_TOLD = "told"  # by its RunPodSandbox or CreateContainer event, while joining
_GONE = "gone"  # removed while joining: the catch-up, reading the store before, skips it
_FIRST = frozenset({nri_pb2.RUN_POD_SANDBOX, nri_pb2.CREATE_CONTAINER})
_REMOVALS = frozenset({nri_pb2.REMOVE_POD_SANDBOX, nri_pb2.REMOVE_CONTAINER})


class Told:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[str, str] = {}
        self._joining = True

    def synchronized(self, ids: Iterable[str]) -> None:
        """The objects of the Synchronize snapshot (marked before it is sent)."""
        with self._lock:
            self._marks.update((i, _SYNCED) for i in ids)

    def catch_up(self, object_id: str) -> bool:
        """Whether the catch-up tells the plugin of it (nothing did yet)."""
        with self._lock:
            if object_id in self._marks:
                return False
            self._marks[object_id] = _SYNCED
            return True

    def joined(self) -> None:
        """The catch-up is over: only the snapshot's and catch-up's marks matter now."""
        with self._lock:
            self._joining = False
            self._marks = {i: m for i, m in self._marks.items() if m == _SYNCED}

    def claim(self, object_id: str, event: int) -> bool:
        """Whether ``event`` about the object goes to the plugin."""
        with self._lock:
            mark = self._marks.get(object_id)
            if event in _REMOVALS:
                if self._joining:
                    self._marks[object_id] = _GONE
                else:
                    self._marks.pop(object_id, None)
                return True
            if event in _FIRST:
                if mark is not None:
                    return False
            elif event == nri_pb2.POST_CREATE_CONTAINER:
                if mark == _SYNCED:
                    return False
            else:
                return True
            if self._joining:
                self._marks[object_id] = _TOLD
            return True
