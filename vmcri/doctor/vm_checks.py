"""The checks of one ``vm`` handler: acceleration, devices, libvirt, guest image, space.

Registered with the backend in ``handlers/registry.py:BACKENDS``, so the doctor picks
a handler's checks from its configured backend and never asks which options it holds.
"""

from __future__ import annotations

from pathlib import Path

from vmcri.doctor import (
    devices,
    guest_checks,
    kvm,
    launcher_checks,
    layer_checks,
    libvirt_checks,
    pool_checks,
)
from vmcri.doctor.model import Check
from vmcri.handlers.vm.options import VmOptions


def handler_checks(handler: str, options: VmOptions, backends: Path) -> list[Check]:
    """Every check of the VM handler ``handler``; ``backends`` holds the backends' data."""
    return [
        kvm.check_kvm(options.accel, handler),
        devices.check_vhost_vsock(options.agent_transport, handler),
        devices.check_vhost_net(handler),
        devices.check_virtiofsd(options.shared_fs, handler),
        launcher_checks.check_launcher(handler),
        launcher_checks.check_qemu_uids(handler),
        libvirt_checks.check_libvirt(options.libvirt_uri, handler),
        libvirt_checks.check_machine_types(options.libvirt_uri, options.machine, handler),
        guest_checks.check_guest_image(options.guest_path, handler),
        guest_checks.check_templates(handler),
        pool_checks.check_pool(handler, options.pool_size, options.template, backends),
        layer_checks.check_layer_space(
            backends, handler, options.writable_layer_mib, options.writable_layer_reserve_mib
        ),
    ]
