"""What a usage sample may say: each figure held to what the pod can have, sums saturated.

A sample's numbers come from the pod's agent, which for a VM pod runs in the guest and
is hostile: the host checks each value against its wire type (vmcri.agent.convert, at
most 2^63-1) but three containers of 2^63-1 bytes each sum past the CRI's uint64 and the
whole ListPodSandboxStats answer failed to encode (INTERNAL for every pod of the node).
So, before a sample reaches a sum or the wire:

* memory figures (usage, working set, RSS, page cache, mapped files, kernel memory, peak)
  are at most ``memory_bound``: the host's MemTotal, which no pod can pass (a runc pod
  lives in the host's memory; a VM is never given more than MemTotal, see
  ``vmcri/handlers/vm/sizing.py``). Swap is not RAM and keeps the general bound;
* every other count is at most 2^64-1, the CRI's uint64;
* the time stamp is not in the future of the host's clock (a guest's clock is its own);
* sums (a pod's figures, the pod-level metrics) saturate at 2^64-1 instead of wrapping
  or overflowing.

A liar gets numbers that are wrong only within its own pod's bounds; no other pod's
answer depends on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from vmcri.supervisor.api import ContainerUsage
from vmcri.usage import UsageCounters

MAX_U64 = (1 << 64) - 1
MAX_MEMORY_BYTES = 1 << 52
"""x86-64's physical address limit: the memory bound when the host's MemTotal is unknown."""

_MEMORY = ("memory_working_set_bytes", "memory_usage_bytes", "memory_rss_bytes")
_COUNTER_MEMORY = frozenset(
    {
        "memory_cache_bytes",
        "memory_mapped_file_bytes",
        "memory_kernel_bytes",
        "memory_max_usage_bytes",
    }
)


def clamp(value: int, high: int = MAX_U64) -> int:
    """``value`` within ``[0, high]``."""
    return 0 if value < 0 else min(value, high)


def saturating_sum(values: Iterable[int]) -> int:
    """The sum, at most 2^64-1 (each value first held to ``[0, 2^64-1]``)."""
    total = 0
    for value in values:
        total = min(total + clamp(value), MAX_U64)
    return total


def bounded(usage: ContainerUsage, memory_bound: int, now_ns: int) -> ContainerUsage:
    """``usage`` with every figure held to its bound (see the module docstring)."""
    c = usage.counters
    counters = {
        f.name: clamp(getattr(c, f.name), memory_bound if f.name in _COUNTER_MEMORY else MAX_U64)
        for f in dataclasses.fields(UsageCounters)
        if f.name != "io"
    }
    io = tuple(
        dataclasses.replace(
            d,
            read_bytes=clamp(d.read_bytes),
            write_bytes=clamp(d.write_bytes),
            reads=clamp(d.reads),
            writes=clamp(d.writes),
        )
        for d in c.io
    )
    plain: dict[str, Any] = {
        f.name: clamp(getattr(usage, f.name), memory_bound if f.name in _MEMORY else MAX_U64)
        for f in dataclasses.fields(ContainerUsage)
        if f.name not in ("timestamp", "counters", "layer_fs")
    }
    return dataclasses.replace(
        usage,
        timestamp=clamp(usage.timestamp, now_ns),
        counters=UsageCounters(**counters, io=io),
        **plain,
    )
