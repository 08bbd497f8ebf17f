"""libvirt: reachable, its version and QEMU's, and the machine types QEMU offers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from vmcri.doctor.model import Check, Status

Opener = Callable[[str], Any]  # uri -> a read-only libvirt connection; raises on failure


def open_read_only(uri: str) -> Any:
    import libvirt

    # libvirt prints every error to stderr by default; the check reports it instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.openReadOnly(uri)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def check_libvirt(uri: str, handler: str, opener: Opener = open_read_only) -> Check:
    try:
        conn = opener(uri)
        try:
            found = f"{uri}: libvirt {_version(conn.getLibVersion())}, "
            found += f"QEMU {_version(conn.getVersion())}"
        finally:
            conn.close()
    except Exception as exc:  # libvirt.libvirtError, or no libvirt module at all
        return Check(
            "libvirt",
            Status.FAIL,
            f"{uri} not reachable: {exc}",
            "VM pods cannot start",
            "start libvirtd (systemctl start libvirtd; "
            "without an init: virtlogd -d && libvirtd -d)",
            handler,
        )
    return Check("libvirt", Status.OK, found, "VMs are defined and run through it", "", handler)


def machine_types(capabilities_xml: str, arch: str = "x86_64") -> set[str]:
    """Machine names (and their canonical aliases' targets) QEMU offers for ``arch``."""
    root = ET.fromstring(capabilities_xml)
    names: set[str] = set()
    for guest in root.iter("guest"):
        arch_node = guest.find("arch")
        if arch_node is None or arch_node.get("name") != arch:
            continue
        for machine in arch_node.iter("machine"):
            if machine.text:
                names.add(machine.text.strip())
    return names


def check_machine_types(
    uri: str, machine: str, handler: str, opener: Opener = open_read_only
) -> Check:
    try:
        conn = opener(uri)
        try:
            offered = machine_types(conn.getCapabilities())
        finally:
            conn.close()
    except Exception as exc:
        return Check(
            "qemu machine",
            Status.FAIL,
            f"cannot read libvirt capabilities: {exc}",
            "VM pods cannot start",
            "see the libvirt line",
            handler,
        )
    aliases = sorted(name for name in offered if "." not in name and "-" not in name)
    found = f"offers {', '.join(aliases) or 'none'} ({len(offered)} machine types)"
    if machine in offered:
        return Check(
            "qemu machine", Status.OK, found, f"VMs use machine = '{machine}'", "", handler
        )
    return Check(
        "qemu machine",
        Status.FAIL,
        found,
        f"VM pods cannot start: machine = '{machine}' is not offered",
        "set machine to one offered (q35), or install a QEMU that has it",
        handler,
    )
