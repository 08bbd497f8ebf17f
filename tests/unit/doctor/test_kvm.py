"""The KVM line: the reason names what is missing, and the verdict follows the accel option."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.doctor.kvm import check_kvm
from vmcri.doctor.model import Status


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def _dev(tmp_path: Path, present: bool) -> Path:
    # /dev/null stands in for an openable /dev/kvm; a missing path for an absent one.
    return Path("/dev/null") if present else tmp_path / "kvm"


def test_guest_without_nested_virtualisation_falls_back_to_tcg(tmp_path: Path) -> None:
    check = check_kvm("auto", "vm", _cpuinfo(tmp_path, "hypervisor"), _dev(tmp_path, False))
    assert check.status is Status.DEGRADED
    assert "neither vmx nor svm" in check.found
    assert "nested" in check.found
    assert "/dev/kvm absent" in check.found
    assert "TCG" in check.consequence
    assert "nested virtualisation" in check.fix


def test_device_without_cpu_flag_is_not_usable(tmp_path: Path) -> None:
    # Nested set-ups can expose /dev/kvm without the flag; guests hang there (accel.py).
    check = check_kvm("auto", "vm", _cpuinfo(tmp_path, ""), _dev(tmp_path, True))
    assert check.status is Status.DEGRADED
    assert "neither vmx nor svm" in check.found
    assert "/dev/kvm" not in check.found


def test_usable_kvm_reports_nesting(tmp_path: Path) -> None:
    nested = tmp_path / "nested"
    nested.write_text("Y\n")
    check = check_kvm("auto", "vm", _cpuinfo(tmp_path, "vmx"), _dev(tmp_path, True), (nested,))
    assert check.status is Status.OK
    assert "nested guests allowed" in check.found


@pytest.mark.parametrize(("accel", "status"), [("kvm", Status.FAIL), ("tcg", Status.INFO)])
def test_forced_accel_without_kvm(tmp_path: Path, accel: str, status: Status) -> None:
    check = check_kvm(accel, "vm", _cpuinfo(tmp_path, ""), _dev(tmp_path, False))
    assert check.status is status
    assert f"accel = '{accel}'" in check.consequence
