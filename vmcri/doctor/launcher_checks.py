"""The launcher libvirt runs as QEMU and virtiofsd: its interpreter and the real QEMU."""

from __future__ import annotations

import os

from vmcri.doctor.model import Check, Status
from vmcri.handlers.vm.launcher import QEMU, launcher_path, real_binary

INTERPRETER = "/usr/bin/python3"  # launcher.py's #! line


def check_launcher(handler: str, interpreter: str = INTERPRETER, qemu: str | None = None) -> Check:
    """FAIL when libvirt could not run the launcher (every VM pod would fail to start)."""
    path = launcher_path(QEMU)
    qemu = real_binary(QEMU) if qemu is None else qemu
    missing = [] if os.access(interpreter, os.X_OK) else [interpreter]
    missing += [] if qemu else ["QEMU"]
    if missing:
        return Check(
            "launcher",
            Status.FAIL,
            f"{path}: no {' and no '.join(missing)}",
            "no VM pod can start: libvirt runs QEMU through the launcher",
            "apt-get install python3 qemu-system-x86",
            handler,
        )
    found = f"{path} ({interpreter}, QEMU at {qemu})"
    consequence = "QEMU and virtiofsd run with narrowed capabilities and a mode filter"
    return Check("launcher", Status.OK, found, consequence, "", handler)
