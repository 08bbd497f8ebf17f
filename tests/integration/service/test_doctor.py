"""``vmcri doctor`` on this very host: the KVM verdict and its reason match the host's facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmcri.handlers.vm.accel import kvm_usable

pytestmark = pytest.mark.integration


def _doctor(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(f'root = "{tmp_path / "root"}"\n')  # the defaults otherwise
    return subprocess.run(
        [sys.executable, "-m", "vmcri", "doctor", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_doctor_reports_tcg_with_the_reason_and_exits_0(tmp_path: Path) -> None:
    if kvm_usable():
        pytest.skip("KVM is usable on this host: there is no TCG fallback to report")
    result = _doctor(tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["pods_can_run"] is True
    kvm = next(c for c in report["checks"] if c["name"] == "kvm")
    assert kvm["status"] == "degraded"
    assert "TCG" in kvm["consequence"]
    flags = _cpu_flags()
    if not flags & {"vmx", "svm"}:
        assert "neither vmx nor svm" in kvm["found"]
        if "hypervisor" in flags:
            assert "no nested virtualisation" in kvm["found"]
    if not os.path.exists("/dev/kvm"):
        assert "/dev/kvm absent" in kvm["found"]
    assert kvm["fix"]


def test_doctor_table_has_every_area(tmp_path: Path) -> None:
    result = _doctor(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("kvm (vm)", "vhost-vsock", "vhost-net", "virtiofsd", "libvirt (vm)",
                 "qemu machine", "guest image", "templates", "runc (runc)", "idmapped mounts",
                 "cgroups", "cni", "disk", "writable layers (vm)"):  # fmt: skip
        assert name in result.stdout, name
    assert "not built (not supported yet)" in result.stdout
    assert "pods can run" in result.stdout


def test_doctor_exits_non_zero_when_a_pod_could_not_run(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('default_runtime_handler = "runc"\n[runtimes.runc]\nbackend = "runc"\n'
                      '[runtimes.runc.options]\nrunc = "/nonexistent/runc"\n')  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "vmcri", "doctor", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "some pods cannot run" in result.stdout
