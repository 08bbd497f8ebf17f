"""Which checks run for a configuration: host-wide ones, then each handler's."""

from __future__ import annotations

from pathlib import Path

from vmcri.config import Config
from vmcri.doctor import (
    devices,
    guest_checks,
    host_checks,
    kvm,
    launcher_checks,
    layer_checks,
    libvirt_checks,
    runc_checks,
)
from vmcri.doctor.model import Check
from vmcri.handlers.registry import parse_options
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.state_dirs import BACKENDS_DIR
from vmcri.handlers.vm.options import VmOptions


def _cni_dirs(config: Config) -> tuple[Path, list[Path]]:
    # Read through getattr: the [network] table is young and may change shape.
    network = getattr(config, "network", None)
    conf_dir = getattr(network, "cni_conf_dir", "/etc/cni/net.d")
    bin_dirs = getattr(network, "cni_bin_dirs", ("/usr/lib/cni", "/opt/cni/bin"))
    return Path(conf_dir), [Path(d) for d in bin_dirs]


def vm_checks(handler: str, options: VmOptions, backends: Path) -> list[Check]:
    return [
        kvm.check_kvm(options.accel, handler),
        devices.check_vhost_vsock(options.agent_transport, handler),
        devices.check_vhost_net(handler),
        devices.check_virtiofsd(options.shared_fs, handler),
        launcher_checks.check_launcher(handler),
        libvirt_checks.check_libvirt(options.libvirt_uri, handler),
        libvirt_checks.check_machine_types(options.libvirt_uri, options.machine, handler),
        guest_checks.check_guest_image(options.guest_path, handler),
        guest_checks.check_templates(handler),
        layer_checks.check_layer_space(
            backends, handler, options.writable_layer_mib, options.writable_layer_reserve_mib
        ),
    ]


def runc_checks_for(handler: str, options: RuncOptions) -> list[Check]:
    return [
        runc_checks.check_runc(options.runc, handler),
        runc_checks.check_idmapped_mounts(handler),
    ]


def run_checks(config: Config) -> list[Check]:
    """Every check for ``config``; raises ConfigError when a handler's options are wrong."""
    conf_dir, bin_dirs = _cni_dirs(config)
    checks = [
        host_checks.check_cgroups(config.cgroup_driver),
        host_checks.check_cni(conf_dir, bin_dirs),
        host_checks.check_nft(getattr(getattr(config, "network", None), "enabled", True)),
        host_checks.check_disk(config.root_dir),
    ]
    for handler, options in parse_options(config).items():
        if isinstance(options, VmOptions):
            checks += vm_checks(handler, options, config.root_dir / BACKENDS_DIR)
        elif isinstance(options, RuncOptions):
            checks += runc_checks_for(handler, options)
    return checks
