"""Host runc: its version, and ID-mapped mounts for user-namespaced pods.

:func:`handler_checks` is registered with the backend in
``handlers/registry.py:BACKENDS``, like the VM handler's (``vm_checks.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from vmcri.doctor.model import Check, Status
from vmcri.handlers.runc import hostfacts
from vmcri.handlers.runc.options import RuncOptions


def handler_checks(handler: str, options: RuncOptions, backends: Path) -> list[Check]:
    """Every check of the runc handler ``handler`` (it keeps nothing in ``backends``
    the doctor could check)."""
    return [check_runc(options.runc, handler), check_idmapped_mounts(handler)]


def check_runc(binary: str, handler: str) -> Check:
    path = shutil.which(binary)
    if path is None:
        return Check(
            "runc",
            Status.FAIL,
            f"{binary!r} not found",
            "runc pods cannot start",
            "apt-get install runc, or set the handler's runc option",
            handler,
        )
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Check(
            "runc",
            Status.FAIL,
            f"{path} does not run: {exc}",
            "runc pods cannot start",
            "reinstall runc",
            handler,
        )
    version = result.stdout.splitlines()[0] if result.stdout else "unknown version"
    return Check("runc", Status.OK, f"{path}: {version}", "containers run under it", "", handler)


def check_idmapped_mounts(
    handler: str, at_least: Callable[[int, int], bool] = hostfacts.kernel_at_least
) -> Check:
    # vmcri ID-maps the pod's mounts itself (mount_setattr), so the kernel decides, not runc.
    if not at_least(5, 19):
        return Check(
            "idmapped mounts",
            Status.DEGRADED,
            "kernel older than 5.19",
            "pods with hostUsers: false are refused",
            "a Linux 5.19+ kernel",
            handler,
        )
    found = "kernel supports ID-mapped mounts"
    if not at_least(6, 3):
        return Check(
            "idmapped mounts",
            Status.DEGRADED,
            f"{found}, not on tmpfs (before 6.3)",
            "hostUsers: false pods cannot have tmpfs-backed volumes",
            "a Linux 6.3+ kernel",
            handler,
        )
    return Check(
        "idmapped mounts",
        Status.OK,
        f"{found}, tmpfs included",
        "hostUsers: false pods run in their own user namespace",
        "",
        handler,
    )
