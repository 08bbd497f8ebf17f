"""The doctor's launcher check: FAIL when libvirt could not run QEMU through it."""

from __future__ import annotations

import sys

from vmcri.doctor.launcher_checks import check_launcher
from vmcri.doctor.model import Status


def test_the_launcher_check_says_ok_when_interpreter_and_qemu_are_there() -> None:
    check = check_launcher("vm", interpreter=sys.executable, qemu="/x/qemu-system-x86_64")
    assert check.status is Status.OK and "/x/qemu-system-x86_64" in check.found


def test_the_launcher_check_fails_without_its_interpreter_or_qemu() -> None:
    no_python = check_launcher("vm", interpreter="/nonexistent/python3", qemu="/x/qemu")
    assert no_python.status is Status.FAIL and "/nonexistent/python3" in no_python.found
    no_qemu = check_launcher("vm", interpreter=sys.executable, qemu="")
    assert no_qemu.status is Status.FAIL and "no QEMU" in no_qemu.found
    assert no_qemu.fix and no_qemu.handler == "vm"
