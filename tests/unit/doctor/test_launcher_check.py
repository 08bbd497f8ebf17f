"""The doctor's launcher check: FAIL when libvirt could not run QEMU through it."""

from __future__ import annotations

import sys
from pathlib import Path

from vmcri.doctor.launcher_checks import QEMU_UIDS, check_launcher, check_qemu_uids
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


def test_the_qemu_uid_check_names_a_user_or_range_among_qemus_uids(tmp_path: Path) -> None:
    passwd, subuid = tmp_path / "passwd", tmp_path / "subuid"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nkubelet:x:1000:1000::/:/bin/false\n")
    subuid.write_text("kubelet:65536:2147352576\n")  # 65536 .. 2**31: through QEMU's
    check = check_qemu_uids("vm", (str(passwd), str(subuid)))
    assert check.status is Status.DEGRADED and "kubelet (65536+2147352576)" in check.found
    subuid.write_text(f"kubelet:65536:{QEMU_UIDS.start - 65536}\nbad line\n")  # up to it
    assert check_qemu_uids("vm", (str(passwd), str(subuid))).status is Status.OK
    passwd.write_text(f"odd:x:{QEMU_UIDS.stop - 1}:0::/:/bin/false\n")
    assert check_qemu_uids("vm", (str(passwd),)).status is Status.DEGRADED
