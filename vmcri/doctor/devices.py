"""vhost-vsock, vhost-net and virtiofsd: the fast paths a VM pod can use."""

from __future__ import annotations

import os
from pathlib import Path

from vmcri.doctor.model import Check, Status
from vmcri.handlers.vm.domain import find_virtiofsd

VHOST_VSOCK = Path("/dev/vhost-vsock")
VHOST_NET = Path("/dev/vhost-net")


def device_state(dev: Path) -> str:
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"does not open ({exc.strerror})"
    os.close(fd)
    return "opens"


def check_vhost_vsock(transport: str, handler: str, dev: Path = VHOST_VSOCK) -> Check:
    state = device_state(dev)
    found = f"{dev} {state}"
    fix = "modprobe vhost_vsock (and add it to /etc/modules-load.d/)"
    if transport == "serial":
        return Check(
            "vhost-vsock",
            Status.INFO,
            found,
            "agent over virtio-serial: agent_transport = 'serial'",
            "",
            handler,
        )
    # The backend decides on existence alone (vmcri.handlers.vm.backend._use_vsock).
    if dev.exists():
        if state != "opens":
            return Check(
                "vhost-vsock",
                Status.FAIL,
                found,
                "VM pods cannot start: vmcri picks vsock because the device exists, "
                "but QEMU cannot open it",
                "give root read-write access to it or set agent_transport = 'serial'",
                handler,
            )
        return Check("vhost-vsock", Status.OK, found, "agent over vsock", "", handler)
    if transport == "vsock":
        return Check(
            "vhost-vsock",
            Status.FAIL,
            found,
            "VM pods cannot start: agent_transport = 'vsock' is forced",
            f"{fix}, or set agent_transport = 'auto'",
            handler,
        )
    return Check(
        "vhost-vsock",
        Status.DEGRADED,
        found,
        "agent over a virtio-serial port (works; vsock needs no per-pod socket file)",
        fix,
        handler,
    )


def check_vhost_net(handler: str, dev: Path = VHOST_NET) -> Check:
    state = device_state(dev)
    found = f"{dev} {state}"
    if state == "opens":
        return Check("vhost-net", Status.OK, found, "virtio-net can run in the kernel", "", handler)
    return Check(
        "vhost-net",
        Status.DEGRADED,
        found,
        "pod VM network traffic would be handled in QEMU userspace (slower)",
        "modprobe vhost_net",
        handler,
    )


def check_virtiofsd(shared_fs: str, handler: str, binary: str | None = None) -> Check:
    path = find_virtiofsd() if binary is None else binary
    found = f"virtiofsd at {path}" if path else "no virtiofsd binary"
    fix = (
        "install virtiofsd (Debian 12: the 'virtiofsd' package from bookworm-backports, "
        "or QEMU's /usr/lib/qemu/virtiofsd)"
    )
    if shared_fs == "9p":
        return Check(
            "virtiofsd",
            Status.INFO,
            found,
            "pod files shared over 9p: shared_fs = '9p'",
            "",
            handler,
        )
    if path:
        return Check("virtiofsd", Status.OK, found, "pod files shared over virtiofs", "", handler)
    if shared_fs == "virtiofs":
        return Check(
            "virtiofsd",
            Status.FAIL,
            found,
            "the daemon refuses to start: shared_fs = 'virtiofs' is forced",
            f"{fix}, or set shared_fs = 'auto'",
            handler,
        )
    return Check(
        "virtiofsd",
        Status.DEGRADED,
        found,
        "pod files and volumes shared over 9p (slower metadata operations)",
        fix,
        handler,
    )
