"""The launcher libvirt runs as QEMU and virtiofsd: its interpreter, the real QEMU, and
the uids it gives each pod's QEMU."""

from __future__ import annotations

import os

from vmcri.doctor.model import Check, Status
from vmcri.handlers.vm.launcher import QEMU, QEMU_UID_BASE, launcher_path, real_binary

INTERPRETER = "/usr/bin/python3"  # launcher.py's #! line
QEMU_UIDS = range(QEMU_UID_BASE, QEMU_UID_BASE + 2**22 + 1)  # + a pid (pid_max <= 2**22)
ID_FILES = ("/etc/passwd", "/etc/subuid", "/etc/subgid")


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


def _overlaps(path: str) -> list[str]:
    """What of ``path`` (passwd: a uid; subuid/subgid: a range) falls among QEMU's uids."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(":")
        try:
            if path.endswith("passwd") and len(fields) > 2:
                first, count = int(fields[2]), 1
            elif len(fields) == 3:
                first, count = int(fields[1]), int(fields[2])
            else:
                continue
        except ValueError:
            continue
        if first < QEMU_UIDS.stop and first + count > QEMU_UIDS.start:
            found.append(f"{path}: {fields[0]} ({first}+{count})")
    return found


def check_qemu_uids(handler: str, files: tuple[str, ...] = ID_FILES) -> Check:
    """DEGRADED when a user or a subordinate id range shares the uids the launcher gives
    each pod's QEMU (``QEMU_UID_BASE`` + its pid): that user, or a user namespace mapped
    onto the range, could signal or trace a pod's QEMU."""
    span = f"{QEMU_UIDS.start}-{QEMU_UIDS.stop - 1}"
    clashes = [clash for path in files for clash in _overlaps(path)]
    if clashes:
        return Check(
            "qemu uids",
            Status.DEGRADED,
            f"QEMU's uids {span} are also {'; '.join(clashes[:5])}",
            "a process with one of those ids could signal or trace a pod's QEMU",
            f"keep {span} out of /etc/passwd, /etc/subuid and /etc/subgid",
            handler,
        )
    consequence = "each pod's QEMU runs jailed as a uid no user or user namespace has"
    return Check("qemu uids", Status.OK, f"{span}: no user, no subordinate range", consequence,
                 "", handler)  # fmt: skip
