"""A cgroup file system in a directory, shaped as these hosts' hybrid one (v1 controllers,
systemd's named hierarchy, cgroup2 at ``unified``) or as a pure v2 one.

The kernel makes a cgroup's files; here :func:`vmcri.host.cgroups.make` makes plain
directories and writes make plain files, which is enough to see what was written where.
"""

from __future__ import annotations

from pathlib import Path

HYBRID = ("cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "systemd")
FAKE_QEMU_PID = 4194305  # above any pid_max: never a real process


def hybrid_root(tmp: Path) -> str:
    root = tmp / "cgroup"
    for name in HYBRID:
        (root / name).mkdir(parents=True)
    (root / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    (root / "unified").mkdir()
    (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    return str(root)


def v2_root(tmp: Path) -> str:
    root = tmp / "cgroup2"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return str(root)
