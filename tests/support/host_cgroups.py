"""What the host's cgroups say about a process: for tests against the real kernel."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vmcri.handlers.vm.domain import domain_name
from vmcri.host import cgroups


def qemu_pid(sandbox_id: str) -> int:
    """The pod VM's QEMU, from the pid file libvirt keeps."""
    return int(Path(f"/run/libvirt/qemu/{domain_name(sandbox_id)}.pid").read_text().strip())


def misplaced_threads(pid: int, cgroup: str) -> list[str]:
    """Every (thread, hierarchy, cgroup) of ``pid`` not in ``cgroup``, in every hierarchy."""
    wrong: list[str] = []
    for tid in cgroups.threads(pid):
        where = cgroups.process_cgroups(pid, tid)
        for h in cgroups.hierarchies():
            key = "" if h.v2 else h.name.split(",")[0]
            if where.get(key) != cgroup:
                wrong.append(f"{tid} {h.name}: {where.get(key)}")
    return wrong


def comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def remove_tree(path: str) -> None:
    """rmdir a test's cgroup tree everywhere (after its processes are gone)."""
    cgroups.remove_tree(path)
    for d in cgroups.dirs(path):
        if os.path.isdir(d):
            raise AssertionError(f"{d} is still in use")
