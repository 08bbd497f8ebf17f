"""What a container uses beyond the basic sample: the counters behind kubelet's CRI metrics.

Filled from the container's cgroup and its processes (``vmcri/agent/guest/cgroups.py``,
in the guest for VM pods and on the host for runc pods) and from the file system of its
writable layer (``vmcri/host/disk.py``, on the host for both). Every field is a plain
count in the unit its name says; 0 where the kernel does not report it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceIo:
    """Block I/O of a cgroup on one device (``io.stat``, ``blkio.throttle.*``)."""

    device: str  # kernel name ("vda", "sda"), or "major:minor" when it has none
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0
    major: int = 0  # the device's numbers; 0 and 0 when unknown (an older agent)
    minor: int = 0


@dataclass(frozen=True)
class UsageCounters:
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cfs_periods: int = 0
    cfs_throttled_periods: int = 0
    cfs_throttled_ns: int = 0
    memory_cache_bytes: int = 0  # page cache
    memory_mapped_file_bytes: int = 0
    memory_swap_bytes: int = 0
    memory_kernel_bytes: int = 0
    memory_max_usage_bytes: int = 0  # the peak since the cgroup was made
    memory_failcnt: int = 0  # times usage hit the limit
    pgfault: int = 0  # this cgroup's own processes (v1); the whole subtree on v2
    pgmajfault: int = 0
    pgfault_hierarchy: int = 0  # the cgroup and its descendants
    pgmajfault_hierarchy: int = 0
    oom_events: int = 0  # processes the kernel OOM-killed in it
    processes: int = 0
    threads: int = 0
    threads_max: int = 0  # pids.max; 0 when unlimited
    file_descriptors: int = 0
    sockets: int = 0
    io: tuple[DeviceIo, ...] = ()


@dataclass(frozen=True)
class FsCapacity:
    """The file system a container's writable layer is on."""

    device: str
    limit_bytes: int
    inodes_total: int
    inodes_free: int
