"""A cgroup file system in a directory, shaped as these hosts' hybrid one (v1 controllers,
systemd's named hierarchy, cgroup2 at ``unified``) or as a pure v2 one.

The kernel makes a cgroup's files; here :func:`vmcri.host.cgroups.make` makes plain
directories and writes make plain files, which is enough to see what was written where.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from vmcri.handlers.vm.cgroup import Placement
from vmcri.store.records import SandboxRecord

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


class FakePodCgroups:
    """The vm backend's cgroup seam without a kernel: what was asked, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.live: set[str] = set()  # leaves made and not removed

    def prepare(self, sandbox: SandboxRecord, max_memory_mib: int) -> Placement:
        leaf = f"/vmcri/{sandbox.id}/vmcri-{sandbox.id}"
        self.calls.append(f"prepare {max_memory_mib}")
        self.live.add(leaf)
        return Placement(f"/vmcri/{sandbox.id}", leaf, made_pod=True)

    def place(self, placement: Placement, qemu_pid: int, domain: str) -> Placement:
        self.calls.append(f"place {qemu_pid}")
        return placement

    @contextlib.contextmanager
    def hotplug(self, placement: Placement, qemu_pid: int, domain: str) -> Iterator[None]:
        self.calls.append("hotplug")
        yield
        self.calls.append(f"place {qemu_pid}")

    def weigh(self, placement: Placement, least: bool) -> None:
        self.calls.append("least" if least else "default")

    def remove(self, placement: Placement) -> bool:
        self.calls.append("remove")
        self.live.discard(placement.leaf)
        return True
