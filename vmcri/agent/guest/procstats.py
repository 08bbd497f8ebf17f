"""Threads, file descriptors and sockets of a container's processes, counted from ``/proc``.

A container decides how many processes and descriptors it has, so the count is bounded:
past ``MAX_PROCESSES`` processes or ``MAX_FDS`` descriptors it stops and reports what it
counted (a lower bound), instead of making a stats call as slow as the container likes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

MAX_PROCESSES = 4096
MAX_FDS = 65536


class ProcessCounts(NamedTuple):
    processes: int = 0
    threads: int = 0
    file_descriptors: int = 0
    sockets: int = 0


def count_processes(pids: Iterable[int], proc: str = "/proc") -> ProcessCounts:
    """Counts over ``pids``; a process gone meanwhile counts for nothing (never raises)."""
    processes = threads = fds = sockets = 0
    for pid in pids:
        if processes >= MAX_PROCESSES or fds >= MAX_FDS:
            break
        base = f"{proc}/{pid}"
        try:
            tasks = len(os.listdir(f"{base}/task"))
            names = os.listdir(f"{base}/fd")
        except OSError:
            continue
        processes += 1
        threads += tasks
        for name in names[: MAX_FDS - fds]:
            fds += 1
            try:
                if os.readlink(f"{base}/fd/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:
                continue
    return ProcessCounts(processes, threads, fds, sockets)
