"""Container statistics from cgroup files, cgroup v2 (the guest) or v1 (hybrid test hosts).

runc's cgroupfs driver places a container with ``linux.cgroupsPath`` ``/a/b`` at
``<root>/a/b`` on cgroup2 and at ``<root>/<controller>/a/b`` on v1. Reading the files directly
costs far less than spawning ``runc events --stats`` per container.

What each counter is read from (missing files read as zero), v2 / v1:

* CPU user and system time: ``cpu.stat`` user_usec, system_usec / ``cpuacct.stat`` ticks;
  CFS periods: ``cpu.stat`` nr_periods, nr_throttled, throttled_usec / ..._time.
* Cache, mapped files, kernel: ``memory.stat`` file, file_mapped, kernel / total_cache,
  total_mapped_file and ``memory.kmem.usage_in_bytes``; swap: ``memory.swap.current`` /
  total_swap; peak and hits of the limit: ``memory.peak``, ``memory.events`` max /
  ``memory.max_usage_in_bytes``, ``memory.failcnt``; page faults: ``memory.stat``
  pgfault (v2 counts the subtree) / pgfault (own) and total_pgfault (subtree).
* Block I/O per device: ``io.stat`` / ``blkio.throttle.io_service*_recursive``.
* Thread limit: ``pids.max`` ("max" is 0: unlimited).

Processes, threads, file descriptors and sockets are counted from ``/proc`` for the
processes in the cgroup and its sub-cgroups (the execs' groups, ``exec_group.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

from vmcri.agent.guest.procstats import ProcessCounts, count_processes
from vmcri.api import agent_pb2
from vmcri.host.blockdev import device_name

CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_DEVICES = 64
NS_PER_USEC = 1000


class DeviceIoStats(NamedTuple):
    device: str
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0
    major: int = 0  # the device's numbers, for the metrics' major and minor labels
    minor: int = 0


class CgroupStats(NamedTuple):
    cpu_usage_ns: int = 0
    memory_usage_bytes: int = 0
    memory_working_set_bytes: int = 0
    memory_rss_bytes: int = 0
    pids: int = 0
    oom_kills: int = 0
    timestamp_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cfs_periods: int = 0
    cfs_throttled_periods: int = 0
    cfs_throttled_ns: int = 0
    memory_cache_bytes: int = 0
    memory_mapped_file_bytes: int = 0
    memory_swap_bytes: int = 0
    memory_kernel_bytes: int = 0
    memory_max_usage_bytes: int = 0
    memory_failcnt: int = 0
    pgfault: int = 0
    pgmajfault: int = 0
    pgfault_hierarchy: int = 0
    pgmajfault_hierarchy: int = 0
    threads_max: int = 0
    processes: ProcessCounts = ProcessCounts()
    io: tuple[DeviceIoStats, ...] = ()


class CgroupReader:
    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.unified = (root / "cgroup.controllers").exists()

    def stats(self, cgroup_path: str) -> CgroupStats:
        """Usage of the cgroup at ``cgroup_path``; missing files read as zero (never raises)."""
        rel = cgroup_path.strip("/")
        now = time.time_ns()
        return self._v2(rel, now) if self.unified else self._v1(rel, now)

    def _v2(self, rel: str, now: int) -> CgroupStats:
        base = self.root / rel
        cpu = _kv(base / "cpu.stat")
        usage = _int(base / "memory.current")
        mstat = _kv(base / "memory.stat")
        kernel = mstat.get("kernel")
        if kernel is None:  # before Linux 5.18
            kernel = sum(mstat.get(k, 0) for k in ("kernel_stack", "pagetables", "slab", "sock"))
        return CgroupStats(
            cpu_usage_ns=cpu.get("usage_usec", 0) * NS_PER_USEC,
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(0, usage - mstat.get("inactive_file", 0)),
            memory_rss_bytes=mstat.get("anon", 0),
            pids=_int(base / "pids.current"),
            oom_kills=self.oom_kills("/" + rel),
            timestamp_ns=now,
            cpu_user_ns=cpu.get("user_usec", 0) * NS_PER_USEC,
            cpu_system_ns=cpu.get("system_usec", 0) * NS_PER_USEC,
            cfs_periods=cpu.get("nr_periods", 0),
            cfs_throttled_periods=cpu.get("nr_throttled", 0),
            cfs_throttled_ns=cpu.get("throttled_usec", 0) * NS_PER_USEC,
            memory_cache_bytes=mstat.get("file", 0),
            memory_mapped_file_bytes=mstat.get("file_mapped", 0),
            memory_swap_bytes=_int(base / "memory.swap.current"),
            memory_kernel_bytes=kernel,
            memory_max_usage_bytes=_int(base / "memory.peak"),
            memory_failcnt=_kv(base / "memory.events").get("max", 0),
            # v2's memory.stat counts the whole subtree: both scopes are the same numbers.
            pgfault=mstat.get("pgfault", 0),
            pgmajfault=mstat.get("pgmajfault", 0),
            pgfault_hierarchy=mstat.get("pgfault", 0),
            pgmajfault_hierarchy=mstat.get("pgmajfault", 0),
            threads_max=_int(base / "pids.max"),  # "max" reads as 0: unlimited
            processes=count_processes(_procs(base)),
            io=_io_v2(base / "io.stat"),
        )

    def _v1(self, rel: str, now: int) -> CgroupStats:
        mem = self.root / "memory" / rel
        usage = _int(mem / "memory.usage_in_bytes")
        mstat = _kv(mem / "memory.stat")
        ticks = _kv(self.root / "cpuacct" / rel / "cpuacct.stat")
        tick_ns = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
        cpu = _kv(self.root / "cpu" / rel / "cpu.stat")
        blkio = self.root / "blkio" / rel
        pids = self.root / "pids" / rel
        return CgroupStats(
            cpu_usage_ns=_int(self.root / "cpuacct" / rel / "cpuacct.usage"),
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(
                0, usage - mstat.get("total_inactive_file", mstat.get("inactive_file", 0))
            ),
            memory_rss_bytes=mstat.get("total_rss", mstat.get("rss", 0)),
            pids=_int(pids / "pids.current"),
            oom_kills=self.oom_kills("/" + rel),
            timestamp_ns=now,
            cpu_user_ns=ticks.get("user", 0) * tick_ns,
            cpu_system_ns=ticks.get("system", 0) * tick_ns,
            cfs_periods=cpu.get("nr_periods", 0),
            cfs_throttled_periods=cpu.get("nr_throttled", 0),
            cfs_throttled_ns=cpu.get("throttled_time", 0),
            memory_cache_bytes=mstat.get("total_cache", 0),
            memory_mapped_file_bytes=mstat.get("total_mapped_file", 0),
            memory_swap_bytes=mstat.get("total_swap", 0),
            memory_kernel_bytes=_int(mem / "memory.kmem.usage_in_bytes"),
            memory_max_usage_bytes=_int(mem / "memory.max_usage_in_bytes"),
            memory_failcnt=_int(mem / "memory.failcnt"),
            pgfault=mstat.get("pgfault", 0),
            pgmajfault=mstat.get("pgmajfault", 0),
            pgfault_hierarchy=mstat.get("total_pgfault", 0),
            pgmajfault_hierarchy=mstat.get("total_pgmajfault", 0),
            threads_max=_int(pids / "pids.max"),
            processes=count_processes(_procs(pids)),
            io=_io_v1(blkio),
        )

    def oom_kills(self, cgroup_path: str) -> int:
        """How many processes the kernel OOM-killed in the cgroup (never raises)."""
        rel = cgroup_path.strip("/")
        if self.unified:
            return _kv(self.root / rel / "memory.events").get("oom_kill", 0)
        return _kv(self.root / "memory" / rel / "memory.oom_control").get("oom_kill", 0)


def counters_message(stats: CgroupStats) -> agent_pb2.UsageCounters:
    """The counters the basic sample does not carry, as the agent sends them."""
    procs = stats.processes
    return agent_pb2.UsageCounters(
        cpu_user_ns=stats.cpu_user_ns,
        cpu_system_ns=stats.cpu_system_ns,
        cfs_periods=stats.cfs_periods,
        cfs_throttled_periods=stats.cfs_throttled_periods,
        cfs_throttled_ns=stats.cfs_throttled_ns,
        memory_cache_bytes=stats.memory_cache_bytes,
        memory_mapped_file_bytes=stats.memory_mapped_file_bytes,
        memory_swap_bytes=stats.memory_swap_bytes,
        memory_kernel_bytes=stats.memory_kernel_bytes,
        memory_max_usage_bytes=stats.memory_max_usage_bytes,
        memory_failcnt=stats.memory_failcnt,
        pgfault=stats.pgfault,
        pgmajfault=stats.pgmajfault,
        pgfault_hierarchy=stats.pgfault_hierarchy,
        pgmajfault_hierarchy=stats.pgmajfault_hierarchy,
        processes=procs.processes,
        threads=procs.threads,
        threads_max=stats.threads_max,
        file_descriptors=procs.file_descriptors,
        sockets=procs.sockets,
        oom_events=stats.oom_kills,
        io=[agent_pb2.DeviceIo(**d._asdict()) for d in stats.io],
    )


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes: MemTotal, MemFree, MemAvailable... (empty if unreadable)."""
    return {key: value * 1024 for key, value in _kv(path, sep=":").items()}


def _procs(cgroup: Path) -> list[int]:
    """The processes in ``cgroup`` and its sub-cgroups (the execs' groups)."""
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(cgroup):
        pids.extend(_ints(Path(dirpath) / "cgroup.procs"))
    return pids


def _io_v2(path: Path) -> tuple[DeviceIoStats, ...]:
    out: list[DeviceIoStats] = []
    for line in _lines(path)[:MAX_DEVICES]:
        dev, _, rest = line.partition(" ")
        fields = dict(kv.partition("=")[::2] for kv in rest.split())
        out.append(
            DeviceIoStats(
                _name(dev),
                read_bytes=_num(fields.get("rbytes")),
                write_bytes=_num(fields.get("wbytes")),
                reads=_num(fields.get("rios")),
                writes=_num(fields.get("wios")),
                **_numbers(dev),
            )
        )
    return tuple(out)


def _io_v1(blkio: Path) -> tuple[DeviceIoStats, ...]:
    totals: dict[str, dict[str, int]] = {}
    for name, key in (("io_service_bytes", "bytes"), ("io_serviced", "ops")):
        for line in _lines(blkio / f"blkio.throttle.{name}_recursive"):
            fields = line.split()
            if len(fields) == 3 and fields[1] in ("Read", "Write"):
                dev = totals.setdefault(fields[0], {})
                dev[f"{fields[1]}_{key}"] = _num(fields[2])
    return tuple(
        DeviceIoStats(
            _name(dev),
            read_bytes=v.get("Read_bytes", 0),
            write_bytes=v.get("Write_bytes", 0),
            reads=v.get("Read_ops", 0),
            writes=v.get("Write_ops", 0),
            **_numbers(dev),
        )
        for dev, v in list(totals.items())[:MAX_DEVICES]
    )


def _numbers(dev: str) -> dict[str, int]:
    """``major`` and ``minor`` of a "MAJ:MIN" key (0 and 0 when it is not one)."""
    major, _, minor = dev.partition(":")
    if major.isdigit() and minor.isdigit():
        return {"major": int(major), "minor": int(minor)}
    return {"major": 0, "minor": 0}


def _name(dev: str) -> str:
    major, _, minor = dev.partition(":")
    if major.isdigit() and minor.isdigit():
        return device_name(int(major), int(minor))
    return dev[:32]


def _num(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _ints(path: Path) -> list[int]:
    return [int(line) for line in _lines(path) if line.isdigit()]


def _int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _kv(path: Path, sep: str = " ") -> dict[str, int]:
    result: dict[str, int] = {}
    for line in _lines(path):
        key, _, value = line.partition(sep)
        fields = value.split()
        if fields:
            try:
                result[key.strip()] = int(fields[0])
            except ValueError:
                continue
    return result
