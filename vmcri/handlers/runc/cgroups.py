"""Read a container's cgroup (v1, hybrid, v2) for stats and OOM kills.

runc's cgroupfs driver puts an absolute ``cgroupsPath`` below the root of each
hierarchy: ``<root>/<controller>/<path>`` on v1 and hybrid hosts (hybrid: v1
controllers, cgroup2 at ``<root>/unified`` without controllers), and
``<root>/<path>`` on a pure v2 host. The root is injected so tests use a fake tree.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from enum import Enum


class CgroupMode(Enum):
    V1 = "v1"
    HYBRID = "hybrid"
    V2 = "v2"


def detect_mode(root: str = "/sys/fs/cgroup") -> CgroupMode:
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupMode.V2
    if os.path.isdir(os.path.join(root, "unified")):
        return CgroupMode.HYBRID
    return CgroupMode.V1


@dataclass(frozen=True)
class CgroupUsage:
    cpu_ns: int = 0
    memory_usage: int = 0
    memory_working_set: int = 0
    memory_rss: int = 0
    pids: int = 0


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_keyed(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


class Cgroups:
    """One host's cgroup tree."""

    def __init__(self, root: str = "/sys/fs/cgroup", mode: CgroupMode | None = None) -> None:
        self.root = root
        self.mode = mode or detect_mode(root)

    def _dir(self, controller: str, path: str) -> str:
        rel = path.lstrip("/")
        if self.mode is CgroupMode.V2:
            return os.path.join(self.root, rel)
        return os.path.join(self.root, controller, rel)

    def oom_events_file(self, path: str) -> str:
        """The file whose ``oom_kill N`` line counts OOM kills in the cgroup."""
        if self.mode is CgroupMode.V2:
            return os.path.join(self._dir("", path), "memory.events")
        return os.path.join(self._dir("memory", path), "memory.oom_control")

    def oom_kills(self, path: str) -> int:
        return oom_kills_in(self.oom_events_file(path))

    def usage(self, path: str) -> CgroupUsage:
        """A sample of the cgroup; counters of a missing cgroup read as 0."""
        if self.mode is CgroupMode.V2:
            d = self._dir("", path)
            cpu = _read_keyed(os.path.join(d, "cpu.stat")).get("usage_usec", 0) * 1000
            usage = _read_int(os.path.join(d, "memory.current"))
            stat = _read_keyed(os.path.join(d, "memory.stat"))
            inactive = stat.get("inactive_file", 0)
            rss = stat.get("anon", 0)
            pids = _read_int(os.path.join(d, "pids.current"))
        else:
            cpu = _read_int(os.path.join(self._dir("cpuacct", path), "cpuacct.usage"))
            mem = self._dir("memory", path)
            usage = _read_int(os.path.join(mem, "memory.usage_in_bytes"))
            stat = _read_keyed(os.path.join(mem, "memory.stat"))
            inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
            rss = stat.get("total_rss", stat.get("rss", 0))
            pids = _read_int(os.path.join(self._dir("pids", path), "pids.current"))
        working_set = max(usage - inactive, 0)
        return CgroupUsage(cpu, usage, working_set, rss, pids)


def remove_tree(cgroups: Cgroups, path: str) -> None:
    """rmdir an empty cgroup (and empty children) in every hierarchy; best effort."""
    rel = path.lstrip("/")
    if not rel:
        return
    if cgroups.mode is CgroupMode.V2:
        tops = [os.path.join(cgroups.root, rel)]
    else:
        try:
            names = sorted(os.listdir(cgroups.root))
        except OSError:
            return
        tops = [os.path.join(cgroups.root, name, rel) for name in names]
    for top in tops:
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def oom_kills_in(events_file: str) -> int:
    """The ``oom_kill`` counter of a memory.oom_control (v1) or memory.events (v2) file."""
    return _read_keyed(events_file).get("oom_kill", 0)
