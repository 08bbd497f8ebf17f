"""Before a VM template is saved: do once what every pod restored from it would do first.

A restored guest resumes with the template's memory, so whatever the template's agent has
loaded is there for free in every pod: modules the agent imports only when first needed
(ctypes for the first mount), and the page cache of the OCI runtime's libraries and the
container's programs, which only a container run reads. The warm-up does both: it loads
those modules and runs one throwaway container with the real OCI runtime, directly (not
through the container manager: it leaves no container, event or exit record behind).

The container's root is a tmpfs directory whose ``/usr`` is the guest's own, bound
read-only; it runs ``/usr/bin/true`` in its own namespaces and cgroup, and is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from vmcri.agent.guest.mounts import Mounter
from vmcri.agent.guest.processes import Reaper
from vmcri.agent.guest.runc import Runc
from vmcri.errors import HostCommandError

log = logging.getLogger(__name__)

CONTAINER_ID = "vmcri-warm-up"
EXIT_TIMEOUT_S = 60.0
# The merged-/usr layout of the guest's Debian root: the rest are links into /usr.
USR_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def _spec(root: Path, cgroup: str) -> dict[str, object]:
    """An OCI spec for ``/usr/bin/true`` with the namespaces and mounts of a pod's container."""
    mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
    ]
    namespaces = ["pid", "ipc", "uts", "mount", "network", "cgroup"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/usr/bin/true"],
            "env": ["PATH=/usr/bin"],
            "cwd": "/",
            "noNewPrivileges": True,
        },
        "root": {"path": str(root), "readonly": True},
        "hostname": "warm-up",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in namespaces],
            "cgroupsPath": cgroup,
            "resources": {"pids": {"limit": 16}},
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
        },
    }


def warm_up(runc: Runc, reaper: Reaper, mounter: Mounter, scratch: Path) -> float:
    """Load the lazily loaded modules and run one container; returns the seconds it took.

    Raises HostCommandError when the container cannot be run (nothing is left behind).
    """
    started = time.monotonic()
    mounter.load()
    bundle = scratch / CONTAINER_ID
    shutil.rmtree(bundle, ignore_errors=True)
    root = bundle / "rootfs"
    root.mkdir(parents=True, mode=0o700)
    try:
        for name, target in USR_LINKS.items():
            os.symlink(target, root / name)
        (bundle / "config.json").write_text(json.dumps(_spec(root, f"/{CONTAINER_ID}")))
        pid_file = bundle / "init.pid"
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            runc.create(
                CONTAINER_ID, bundle, pid_file=pid_file, log=bundle / "runc.log",
                stdin=null, stdout=null, stderr=null,
            )  # fmt: skip
        finally:
            os.close(null)
        waiter = reaper.watch(int(pid_file.read_text()))
        runc.start(CONTAINER_ID)
        if not waiter.wait(EXIT_TIMEOUT_S):
            raise HostCommandError(f"the warm-up container did not exit in {EXIT_TIMEOUT_S:.0f} s")
        if waiter.exit_code != 0:
            raise HostCommandError(f"the warm-up container exited {waiter.exit_code}")
    except (OSError, ValueError) as exc:
        raise HostCommandError(f"warm-up: {exc}") from exc
    finally:
        runc.delete(CONTAINER_ID)
        shutil.rmtree(bundle, ignore_errors=True)
    took = time.monotonic() - started
    log.info("warm-up container ran in %.2f s", took)
    return took
