"""The host checks on fake host trees, and the report's verdict."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from vmcri.config import parse_config_text
from vmcri.doctor import devices, host_checks, libvirt_checks, runc_checks
from vmcri.doctor.model import Check, Status, pods_can_run
from vmcri.doctor.report import render_json, render_table
from vmcri.doctor.run import backend_checks, run_checks
from vmcri.handlers.registry import BACKENDS
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.vm.options import VmOptions

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "pods",
    "plugins": [{"type": "bridge"}, {"type": "portmap"}],
}


def test_no_cni_config_means_loopback_only(tmp_path: Path) -> None:
    check = host_checks.check_cni(tmp_path / "net.d", [tmp_path / "bin"])
    assert check.status is Status.DEGRADED
    assert "loopback only" in check.consequence


def test_cni_plugin_missing_fails(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-pods.conflist").write_text(json.dumps(CONFLIST))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bridge").write_text("")
    check = host_checks.check_cni(tmp_path / "net.d", [tmp_path / "bin"])
    assert check.status is Status.FAIL
    assert "portmap" in check.found and "bridge, portmap" in check.found


def test_cni_config_with_plugins_is_ok(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-pods.conflist").write_text(json.dumps(CONFLIST))
    (tmp_path / "bin").mkdir()
    for plugin in ("bridge", "portmap"):
        (tmp_path / "bin" / plugin).write_text("")
    assert host_checks.check_cni(tmp_path / "net.d", [tmp_path / "bin"]).status is Status.OK


def test_a_host_without_nft_fails_and_says_which_package() -> None:
    check = host_checks.check_nft(True, "")
    assert check.status is Status.FAIL
    assert check.fix == "apt-get install nftables"
    assert host_checks.check_nft(True, "/usr/sbin/nft").status is Status.OK
    assert host_checks.check_nft(False, "").status is Status.INFO  # networking disabled


def test_unparsable_cni_config_fails(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-pods.conflist").write_text("{not json")
    check = host_checks.check_cni(tmp_path / "net.d", [])
    assert check.status is Status.FAIL
    assert "does not parse" in check.found


def test_cgroup_v2_missing_controller_is_degraded(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    check = host_checks.check_cgroups("cgroupfs", tmp_path, tmp_path / "no-systemd")
    assert check.status is Status.DEGRADED
    assert "memory, pids" in check.consequence


def test_systemd_driver_without_systemd_is_flagged(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    check = host_checks.check_cgroups("systemd", tmp_path, tmp_path / "no-systemd")
    assert check.status is Status.DEGRADED
    assert "systemd is not running" in check.found


def test_disk_check_walks_up_to_an_existing_directory(tmp_path: Path) -> None:
    check = host_checks.check_disk(tmp_path / "not" / "yet")
    assert str(tmp_path) in check.found


def test_forced_vsock_without_device_fails(tmp_path: Path) -> None:
    check = devices.check_vhost_vsock("vsock", "vm", tmp_path / "vhost-vsock")
    assert check.status is Status.FAIL
    auto = devices.check_vhost_vsock("auto", "vm", tmp_path / "vhost-vsock")
    assert auto.status is Status.DEGRADED and "virtio-serial" in auto.consequence


def test_virtiofsd_fallback_and_forced() -> None:
    assert devices.check_virtiofsd("auto", "vm", binary="").status is Status.DEGRADED
    assert devices.check_virtiofsd("virtiofs", "vm", binary="").status is Status.FAIL
    assert devices.check_virtiofsd("auto", "vm", binary="/x/virtiofsd").status is Status.OK


def test_old_kernel_refuses_user_namespaces() -> None:
    def old(major: int, minor: int) -> bool:
        return (major, minor) <= (5, 10)

    check = runc_checks.check_idmapped_mounts("runc", old)
    assert check.status is Status.DEGRADED
    assert "hostUsers: false" in check.consequence


def test_missing_runc_fails() -> None:
    check = runc_checks.check_runc("/nonexistent/runc", "runc")
    assert check.status is Status.FAIL
    assert "runc pods cannot start" in check.consequence


def test_unreachable_libvirt_fails() -> None:
    def refuse(uri: str) -> object:
        raise OSError(f"cannot connect to {uri}")

    check = libvirt_checks.check_libvirt("qemu:///system", "vm", refuse)
    assert check.status is Status.FAIL
    assert "cannot connect to qemu:///system" in check.found


def test_machine_types_from_capabilities() -> None:
    caps = """<capabilities><guest><arch name='x86_64'>
      <machine>pc-q35-7.2</machine><machine canonical='pc-q35-7.2'>q35</machine>
      <machine>microvm</machine></arch></guest>
      <guest><arch name='i686'><machine>isapc</machine></arch></guest></capabilities>"""
    assert libvirt_checks.machine_types(caps) == {"pc-q35-7.2", "q35", "microvm"}


def test_one_failure_makes_the_verdict_and_json_say_so() -> None:
    checks = [
        Check("kvm", Status.DEGRADED, "not usable", "TCG", "enable nesting", "vm"),
        Check("runc", Status.FAIL, "'runc' not found", "runc pods cannot start", "install", "runc"),
    ]
    assert not pods_can_run(checks)
    table = render_table(checks)
    assert "kvm (vm)" in table and "fix: enable nesting" in table
    assert "some pods cannot run" in table
    report = json.loads(render_json(checks))
    assert report["pods_can_run"] is False
    assert report["checks"][1] == {
        "name": "runc",
        "status": "fail",
        "found": "'runc' not found",
        "consequence": "runc pods cannot start",
        "fix": "install",
        "handler": "runc",
    }


def _layer(backends: Path, pod: str, size_mib: int) -> None:
    (backends / "vm" / pod).mkdir(parents=True)
    with open(backends / "vm" / pod / "writable.img", "wb") as image:
        image.truncate(size_mib << 20)  # sparse: all of it still claimable


def test_writable_layers_report_promised_against_free(tmp_path: Path) -> None:
    from vmcri.doctor.layer_checks import check_layer_space

    backends = tmp_path / "backends"
    before = check_layer_space(backends, "vm", 64, reserve_mib=0)  # before the first start
    assert before.status is Status.OK and "0 pods' layers" in before.found
    free_mib = (lambda fs: fs.f_bavail * fs.f_frsize >> 20)(os.statvfs(tmp_path))
    _layer(backends, "a", free_mib // 2)
    ok = check_layer_space(backends, "vm", 64, reserve_mib=0)
    assert ok.status is Status.OK, ok
    assert f"promised {free_mib // 2} MiB" in ok.found and "1 pods' layers" in ok.found
    down = check_layer_space(backends, "vm", free_mib, reserve_mib=0)
    assert down.status is Status.DEGRADED and "sized down" in down.consequence, down
    _layer(backends, "b", free_mib)  # promised more than is free (before this limit)
    full = check_layer_space(backends, "vm", 64, reserve_mib=0)
    assert full.status is Status.FAIL and "RESOURCE_EXHAUSTED" in full.consequence, full
    off = check_layer_space(backends, "vm", 0, reserve_mib=0)
    assert off.status is Status.INFO


def test_each_handler_gets_the_checks_its_configured_backend_registered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # run_checks asks each handler's BackendKind, never the options' type: a handler
    # named unlike its backend gets that backend's checks, under its own name.
    asked: list[tuple[str, str, object]] = []

    def fake_checks(kind: Any, handler: str, options: object, backends: Path) -> list[Check]:
        asked.append((kind.doctor, handler, options))
        return [Check("fake", Status.OK, "", handler=handler)]

    monkeypatch.setattr("vmcri.doctor.run.backend_checks", fake_checks)
    config = parse_config_text(
        f"root = '{tmp_path}'\ndefault_runtime_handler='a'\n"
        "[runtimes.a]\nbackend='runc'\n[runtimes.b]\nbackend='vm'\n"
    )
    checks = run_checks(config)
    assert [(ref, name, type(options)) for ref, name, options in asked] == [
        ("vmcri.doctor.runc_checks:handler_checks", "a", RuncOptions),
        ("vmcri.doctor.vm_checks:handler_checks", "b", VmOptions),
    ]
    assert [c.label for c in checks if c.name == "fake"] == ["fake (a)", "fake (b)"]


def test_the_runc_backend_registers_its_runc_checks(tmp_path: Path) -> None:
    runc = BACKENDS["runc"]
    checks = backend_checks(runc, "sandboxed", RuncOptions(runc="/nonexistent"), tmp_path)
    assert [c.label for c in checks] == ["runc (sandboxed)", "idmapped mounts (sandboxed)"]
    assert checks[0].status is Status.FAIL
