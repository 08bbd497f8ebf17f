"""Options of the ``vm`` backend (``[runtimes.<name>.options]`` with backend "vm")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmcri.config import SOURCE_TREE
from vmcri.errors import ConfigError


@dataclass(frozen=True)
class VmOptions:
    libvirt_uri: str = "qemu:///system"  # libvirt connection of the VMs
    machine: Literal["microvm", "q35"] = "q35"  # QEMU machine type
    accel: Literal["auto", "kvm", "tcg"] = "auto"  # auto: KVM only when really usable
    overhead_memory_mib: int = 160  # VM memory beyond the containers' limits
    overhead_vcpus: int = 1  # vCPUs beyond the containers' CPU limits
    default_memory_mib: int = 256  # when no container has a memory limit
    # How far a running VM grows when its containers' limits need more (vCPU hotplug,
    # virtio-mem): max_vcpus 0 is limits of the host's CPUs (at most 8) plus
    # overhead_vcpus. max_memory_mib bounds the VM of a pod without a pod-level memory
    # limit (one with a limit never grows past it), never beyond the host's MemTotal; its
    # virtio-mem region is that large, and a guest can make QEMU back all of it
    # (ARCHITECTURE.md, "VM sizing"); 0 is the host's MemTotal.
    max_vcpus: int = 0
    max_memory_mib: int = 4096
    # The cgroup of pods without a cgroup_parent (crictl): <cgroup_parent>/<sandbox id>.
    cgroup_parent: str = "/vmcri"
    # What QEMU (and virtiofsd) hold beyond the guest's RAM: code cache, heap, page
    # tables, the root image's page cache. A pod cgroup vmcri makes itself is limited to
    # the VM's maximum memory plus this (ARCHITECTURE.md, "Where a VM pod's processes run").
    qemu_memory_allowance_mib: int = 192
    shared_fs: Literal["auto", "9p", "virtiofs"] = "auto"  # auto: virtiofs if virtiofsd exists
    agent_transport: Literal["auto", "serial", "vsock"] = "auto"  # auto: vsock if vhost-vsock
    guest_dir: str = ""  # kernel, initrd, rootfs; "" is guest/build in the source tree
    boot_timeout_s: int = 60  # wait for the guest agent after the VM starts
    shutdown_timeout_s: int = 10  # clean shutdown before the VM is destroyed
    # Size of the pod's file system for its containers' writable layers (on disk, under the
    # root dir); 0: a plain directory there, limited only by that file system.
    writable_layer_mib: int = 2048
    # Disk kept free when the pods' layers are full: a new pod's layer is sized down to what
    # is left above it once every earlier pod's layer is full, and refused under 64 MiB
    # (layer_budget.py).
    writable_layer_reserve_mib: int = 1024
    # VM templates: "auto" boots one VM per shape in the background, saves it and starts
    # pods by restoring it (cold boot whenever that is impossible or fails); "off" always
    # cold-boots. Templates need 9p: with "auto", shared_fs "auto" means 9p.
    template: Literal["auto", "off"] = "auto"
    template_dir: str = ""  # where templates are kept; "" is <root>/backends/vm/templates
    # A warm pool of restored, paused VMs per template shape (pool.py): this many kept
    # per shape a pod asked for, made one at a time in the background at the lowest CPU
    # weight, taken by RunPodSandbox. 0: no pool. Needs templates (without them: off).
    # Each idle VM holds its RAM as a pod does.
    pool_size: int = 0
    # The OCI runtime the guest's agent runs containers with: both are in the guest image
    # and take the same command line; crun, a C program, creates a container in a
    # fraction of runc's time (see ARCHITECTURE.md, "The guest's OCI runtime").
    oci_runtime: Literal["crun", "runc"] = "crun"

    def __post_init__(self) -> None:
        for key in (
            "overhead_memory_mib",
            "default_memory_mib",
            "boot_timeout_s",
            "qemu_memory_allowance_mib",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"options.{key}: must be positive")
        if not 0 <= self.writable_layer_mib <= 1 << 24:
            raise ConfigError("options.writable_layer_mib: must be 0 (no limit) to 16 TiB")
        if 0 < self.writable_layer_mib < 64:
            raise ConfigError("options.writable_layer_mib: at least 64 MiB (or 0 for no limit)")
        if not 0 <= self.writable_layer_reserve_mib <= 1 << 24:
            raise ConfigError("options.writable_layer_reserve_mib: must be 0 to 16 TiB")
        if not 0 <= self.max_vcpus <= 288:
            raise ConfigError("options.max_vcpus: must be 0 (from the host's CPUs) to 288")
        if not 0 <= self.max_memory_mib <= 1 << 32:
            raise ConfigError("options.max_memory_mib: must be 0 (the host's MemTotal) to 4 PiB")
        if self.overhead_vcpus < 0 or self.shutdown_timeout_s < 0:
            raise ConfigError("options: overhead_vcpus and shutdown_timeout_s must not be negative")
        if not self.cgroup_parent.startswith("/") or ".." in self.cgroup_parent.split("/"):
            raise ConfigError("options.cgroup_parent: must be an absolute cgroup path")
        if not 0 <= self.pool_size <= 64:
            raise ConfigError("options.pool_size: must be 0 (no pool) to 64")
        if self.guest_dir and not Path(self.guest_dir).is_absolute():
            raise ConfigError("options.guest_dir: must be an absolute path")
        if self.template_dir and not Path(self.template_dir).is_absolute():
            raise ConfigError("options.template_dir: must be an absolute path")

    @property
    def guest_path(self) -> Path:
        return Path(self.guest_dir) if self.guest_dir else SOURCE_TREE / "guest/build"
