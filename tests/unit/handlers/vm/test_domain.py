"""Domain XML: policy in DomainSpec, rendering checked against golden files.

Regenerate the golden files after an intended change with
``VMCRI_REGENERATE_GOLDEN=1 pytest tests/unit/handlers/vm/test_domain.py``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.domain_spec import spec
from vmcri.handlers.vm.accel import choose_accel, kvm_usable
from vmcri.handlers.vm.backend import _use_vsock
from vmcri.handlers.vm.domain import (
    Nic,
    Share,
    TemplateMemory,
    boot_vcpus,
    kernel_cmdline,
    vsock_cid,
)
from vmcri.handlers.vm.render import render_domain

GOLDEN = Path(__file__).parent / "golden"


CASES = {
    "tcg-q35-9p": spec(),
    "kvm-2cpu-virtiofs-readonly": spec(
        domain_type="kvm",
        vcpus=2,
        memory_mib=1184,
        shares=(Share("vmcri-pod", "/srv/share", True, "virtiofs"),),
        run_as_root=True,
        agent_vsock_cid=vsock_cid("ab" * 32),
        cmdline=kernel_cmdline(False, "/run/vmcri/shared", vsock=True, share_driver="virtiofs"),
        virtiofsd="/usr/libexec/virtiofsd",
        tcg_cache_mib=0,
    ),
    "tcg-q35-9p-nic": spec(
        nic=Nic(mac="0a:58:0a:fa:00:05", tap="vmtapabababab", mtu=1450, vhost=False)
    ),
    "tcg-q35-9p-template-clone": spec(
        cmdline=kernel_cmdline(False, "/run/vmcri/shared", template=True),
        template_memory=TemplateMemory("/var/lib/vmcri/templates/k/memory", False, True),
    ),
    # Growable (sizing.py): vCPUs up to 4, a virtio-mem region of 1 GiB; with virtiofs the
    # region is shared memory, as the boot RAM is.
    # Under TCG all 4 vCPUs are there from boot, the kernel starts 1 (domain.plugs_vcpus).
    "tcg-q35-9p-growable": spec(
        max_vcpus=4,
        hotplug_memory_mib=1024,
        cmdline=kernel_cmdline(
            False, "/run/vmcri/shared", memory_hotplug=True, boot_vcpus=boot_vcpus("qemu", 1, 4)
        ),
    ),
    "tcg-q35-9p-template-clone-growable": spec(
        max_vcpus=2,
        hotplug_memory_mib=512,
        cmdline=kernel_cmdline(
            False, "/run/vmcri/shared", template=True, memory_hotplug=True, boot_vcpus=1
        ),
        template_memory=TemplateMemory("/var/lib/vmcri/templates/k/memory", False, True),
    ),
    "kvm-virtiofs-growable": spec(
        domain_type="kvm",
        max_vcpus=8,
        hotplug_memory_mib=4096,
        shares=(Share("vmcri-pod", "/srv/share", False, "virtiofs"),),
        run_as_root=True,
        cmdline=kernel_cmdline(
            False, "/run/vmcri/shared", share_driver="virtiofs", memory_hotplug=True
        ),
        virtiofsd="/usr/libexec/virtiofsd",
        tcg_cache_mib=0,
    ),
    "kvm-nic-vhost": spec(
        domain_type="kvm",
        tcg_cache_mib=0,
        nic=Nic(mac="0a:58:0a:fa:00:05", tap="vmtapabababab", mtu=9000, vhost=True),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_xml_matches_golden(case: str) -> None:
    rendered = render_domain(CASES[case])
    golden = GOLDEN / f"{case}.xml"
    if os.environ.get("VMCRI_REGENERATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()
    ET.fromstring(rendered)  # well-formed


def test_vcpus_are_hotplugged_under_kvm_and_present_from_boot_under_tcg() -> None:
    kvm = ET.fromstring(render_domain(CASES["kvm-virtiofs-growable"])).find("vcpu")
    assert kvm is not None and (kvm.get("current"), kvm.text) == ("1", "8")
    assert boot_vcpus("kvm", 1, 8) == 0
    tcg = ET.fromstring(render_domain(CASES["tcg-q35-9p-growable"])).find("vcpu")
    assert tcg is not None and (tcg.get("current"), tcg.text) == (None, "4")
    assert boot_vcpus("qemu", 1, 4) == 1 and boot_vcpus("qemu", 2, 2) == 0
    assert "maxcpus=1" in CASES["tcg-q35-9p-growable"].cmdline


def test_values_are_escaped() -> None:
    rendered = render_domain(spec(console_log="/tmp/a'b<c>&.log"))
    root = ET.fromstring(rendered)
    assert root.find("./devices/serial/source").get("path") == "/tmp/a'b<c>&.log"  # type: ignore[union-attr]


def test_no_devices_the_pod_does_not_need() -> None:
    root = ET.fromstring(render_domain(spec()))
    devices = {child.tag for child in root.find("devices")}  # type: ignore[union-attr]
    assert devices <= {
        "disk",
        "controller",
        "channel",
        "filesystem",
        "serial",
        "console",
        "memballoon",
    }
    assert root.find("./devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert root.find("./devices/interface") is None
    assert root.find("./devices/graphics") is None


def test_accel_only_uses_kvm_when_usable(tmp_path: Path) -> None:
    assert choose_accel("auto", usable=False).domain_type == "qemu"
    assert choose_accel("auto", usable=False).degraded
    assert choose_accel("auto", usable=True).domain_type == "kvm"
    assert choose_accel("tcg", usable=True).domain_type == "qemu"
    assert choose_accel("kvm", usable=False).domain_type == "kvm"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 hypervisor\n")
    assert not kvm_usable(cpuinfo, tmp_path / "kvm")
    cpuinfo.write_text("processor : 0\nflags : fpu vmx sse2\n")
    assert not kvm_usable(cpuinfo, tmp_path / "no-such-device")


def test_vsock_cids_are_stable_and_never_reserved() -> None:
    assert vsock_cid("ab" * 32) == vsock_cid("ab" * 32)
    assert vsock_cid("00000000" + "f" * 56) == 3
    assert 3 <= vsock_cid("f" * 64) < 2**31


def test_agent_transport_choice(tmp_path: Path) -> None:
    device = tmp_path / "vhost-vsock"
    assert not _use_vsock("auto", device)
    device.touch()
    assert _use_vsock("auto", device)
    assert not _use_vsock("serial", device)
    assert _use_vsock("vsock", tmp_path / "absent")


def test_virtiofs_shares_memory_and_names_the_daemon() -> None:
    root = ET.fromstring(render_domain(CASES["kvm-2cpu-virtiofs-readonly"]))
    assert root.find("./memoryBacking/access").get("mode") == "shared"  # type: ignore[union-attr]
    binary = root.find("./devices/filesystem/binary")
    assert binary is not None and binary.get("path") == "/usr/libexec/virtiofsd"
    # QEMU runs as root all the same: it opens the pod's hotplugged disks by path.
    assert root.find("./seclabel/label").text == "+0:+0"  # type: ignore[union-attr]
    assert root.find("./os/cmdline").text.endswith(":virtiofs quiet")  # type: ignore[union-attr]
    assert ET.fromstring(render_domain(spec())).find("./memoryBacking") is None
