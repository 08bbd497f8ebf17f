"""The runc pods' cgroups on the host: what the backend itself does with them.

runc makes and removes each container's cgroup, and the pod's agent reads its stats
(:mod:`vmcri.agent.guest.cgroups`, the same reader in a guest and on a host). What is
left to the backend: the pod's parent cgroup, removed with the pod, and ending every
process of a container whose agent died (no one else would reap them).

runc's cgroupfs driver puts an absolute ``cgroupsPath`` below the root of each
hierarchy: ``<root>/<controller>/<path>`` on v1 and hybrid hosts, ``<root>/<path>`` on
a pure v2 host.
"""

from __future__ import annotations

import contextlib
import os
import signal

CGROUP_ROOT = "/sys/fs/cgroup"


def _dirs(path: str, root: str) -> list[str]:
    """The cgroup's directory in every hierarchy that has it."""
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        return []
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return [os.path.join(root, rel)]
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, name, rel) for name in names]


def remove_tree(path: str, root: str = CGROUP_ROOT) -> None:
    """rmdir an empty cgroup (and empty children) in every hierarchy; best effort."""
    for top in _dirs(path, root):
        if not os.path.isdir(top):
            continue
        for dirpath, _subdirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def kill_all_in(path: str, root: str = CGROUP_ROOT) -> int:
    """SIGKILL every process in the cgroup (each hierarchy's ``cgroup.procs``); the count."""
    pids: set[int] = set()
    for top in _dirs(path, root):
        for dirpath, _subdirs, files in os.walk(top):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip().isdigit())
            except OSError:
                continue
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
