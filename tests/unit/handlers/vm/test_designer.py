"""The one design function: what it builds for a cold boot and for a clone is what the
golden files hold, byte for byte (``test_domain.py`` renders them from hand-made specs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vmcri.handlers.vm.designer import Hardware, HostSide, design_domain
from vmcri.handlers.vm.domain import Nic, TemplateMemory, domain_uuid
from vmcri.handlers.vm.guest_image import GuestImage
from vmcri.handlers.vm.launcher import JAIL_READONLY, JAIL_ROOT, QEMU, launcher_path
from vmcri.handlers.vm.render import render_domain

GOLDEN = Path(__file__).parent / "golden"
GUEST = GuestImage(
    kernel=Path("/guest/vmlinuz"),
    initrd=Path("/guest/initrd.img"),
    root_image=Path("/guest/rootfs.img"),
    version="abc123",
)
TCG = Hardware("qemu", "q35", 416, 1, 0, 0, tcg_cache_mib=32, share_driver="9p")
STATE = Path("/run/vmcri/backends/vm/ab")
HOST = HostSide(
    name="vmcri-" + "ab" * 32,
    uuid=domain_uuid("ab" * 32),
    agent_socket=STATE / "agent.sock",
    console_log=STATE / "console.log",
    share=STATE / "share",
)
CLONE = TemplateMemory("/var/lib/vmcri/templates/k/memory", shared=False, incoming=True)

CASES: dict[str, tuple[Hardware, HostSide, dict[str, Any]]] = {
    "tcg-q35-9p": (TCG, HOST, {}),
    "tcg-q35-9p-nic": (
        TCG,
        HOST,
        {"nic": Nic(mac="0a:58:0a:fa:00:05", tap="vmtapabababab", mtu=1450, vhost=False)},
    ),
    "tcg-q35-9p-growable": (
        dataclasses.replace(TCG, max_vcpus=4, hotplug_memory_mib=1024),
        HOST,
        {},
    ),
    "tcg-q35-9p-template-clone": (TCG, HOST, {"template_memory": CLONE}),
    "tcg-q35-9p-template-clone-growable": (
        dataclasses.replace(TCG, max_vcpus=2, hotplug_memory_mib=512),
        HOST,
        {"template_memory": CLONE},
    ),
    "kvm-virtiofs-growable": (
        Hardware("kvm", "q35", 416, 1, 8, 4096, tcg_cache_mib=0, share_driver="virtiofs"),
        dataclasses.replace(HOST, share=Path("/srv/share")),
        {"virtiofsd": "/usr/libexec/virtiofsd"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_designed_domain_is_the_golden_one(case: str) -> None:
    hardware, host, rest = CASES[case]
    spec = design_domain(hardware, GUEST, host, oci_runtime="runc", **rest)
    assert spec.emulator == launcher_path(QEMU)  # the golden files keep libvirt's
    rendered = render_domain(dataclasses.replace(spec, emulator=""))
    assert rendered == (GOLDEN / f"{case}.xml").read_text()


def test_a_template_and_its_clone_differ_only_in_host_side_values() -> None:
    clone = design_domain(TCG, GUEST, HOST, oci_runtime="runc", template_memory=CLONE)
    template = design_domain(
        TCG,
        GUEST,
        dataclasses.replace(HOST, name="vmcritpl-1-k", agent_socket=Path("/t/a.sock")),
        oci_runtime="runc",
        template_memory=TemplateMemory("/t/memory", shared=True, incoming=False),
    )
    same = {"name", "agent_socket", "template_memory"}
    for field in dataclasses.fields(clone):
        if field.name not in same:
            assert getattr(clone, field.name) == getattr(template, field.name), field.name
    assert "vmcri.virtio_ids=1" in clone.cmdline and "vmcri.share=" not in clone.cmdline


def test_a_pods_qemu_is_jailed_to_its_share_and_disks_and_reads_the_rest() -> None:
    disks = Path("/var/lib/vmcri/backends/vm/ab")
    host = dataclasses.replace(HOST, jail_root=STATE / "jail", disks=disks)
    spec = design_domain(TCG, GUEST, host, oci_runtime="crun", template_memory=CLONE)
    assert spec.jail is not None
    assert spec.jail.root == str(STATE / "jail")
    assert set(spec.jail.writable) == {str(STATE / "share"), str(disks), CLONE.path}
    assert set(spec.jail.readonly) == {
        "/guest/vmlinuz", "/guest/initrd.img", "/guest/rootfs.img", str(disks / "layers")
    }  # fmt: skip
    args = list(spec.qemu_args)
    at = args.index(JAIL_ROOT)
    assert args[at + 1] == str(STATE / "jail")
    assert [args[i + 1] for i, a in enumerate(args) if a == JAIL_READONLY][-1] == str(
        disks / "layers"
    )
    # Without a jail root (the template's device digest), no jail options at all.
    unjailed = design_domain(TCG, GUEST, HOST, oci_runtime="crun", template_memory=CLONE)
    assert unjailed.jail is None and JAIL_ROOT not in unjailed.qemu_args
