"""Container statistics from cgroup files, cgroup v2 (the guest) or v1 (hybrid test hosts).

runc's cgroupfs driver places a container with ``linux.cgroupsPath`` ``/a/b`` at
``<root>/a/b`` on cgroup2 and at ``<root>/<controller>/a/b`` on v1. Reading the files directly
costs far less than spawning ``runc events --stats`` per container.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupStats(NamedTuple):
    cpu_usage_ns: int = 0
    memory_usage_bytes: int = 0
    memory_working_set_bytes: int = 0
    memory_rss_bytes: int = 0
    pids: int = 0
    oom_kills: int = 0
    timestamp_ns: int = 0


class CgroupReader:
    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.unified = (root / "cgroup.controllers").exists()

    def stats(self, cgroup_path: str) -> CgroupStats:
        """Usage of the cgroup at ``cgroup_path``; missing files read as zero (never raises)."""
        rel = cgroup_path.strip("/")
        now = time.time_ns()
        if self.unified:
            base = self.root / rel
            cpu = _kv(base / "cpu.stat").get("usage_usec", 0) * 1000
            usage = _int(base / "memory.current")
            mstat = _kv(base / "memory.stat")
            rss = mstat.get("anon", 0)
            inactive = mstat.get("inactive_file", 0)
            pids = _int(base / "pids.current")
        else:
            cpu = _int(self.root / "cpuacct" / rel / "cpuacct.usage")
            mem = self.root / "memory" / rel
            usage = _int(mem / "memory.usage_in_bytes")
            mstat = _kv(mem / "memory.stat")
            rss = mstat.get("total_rss", mstat.get("rss", 0))
            inactive = mstat.get("total_inactive_file", mstat.get("inactive_file", 0))
            pids = _int(self.root / "pids" / rel / "pids.current")
        return CgroupStats(
            cpu_usage_ns=cpu,
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(0, usage - inactive),
            memory_rss_bytes=rss,
            pids=pids,
            oom_kills=self.oom_kills(cgroup_path),
            timestamp_ns=now,
        )

    def oom_kills(self, cgroup_path: str) -> int:
        """How many processes the kernel OOM-killed in the cgroup (never raises)."""
        rel = cgroup_path.strip("/")
        if self.unified:
            return _kv(self.root / rel / "memory.events").get("oom_kill", 0)
        return _kv(self.root / "memory" / rel / "memory.oom_control").get("oom_kill", 0)


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes: MemTotal, MemFree, MemAvailable... (empty if unreadable)."""
    return {key: value * 1024 for key, value in _kv(path, sep=":").items()}


def _int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _kv(path: Path, sep: str = " ") -> dict[str, int]:
    result: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(sep)
        fields = value.split()
        if fields:
            try:
                result[key.strip()] = int(fields[0])
            except ValueError:
                continue
    return result
