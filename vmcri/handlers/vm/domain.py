"""DomainSpec: everything a VM's libvirt domain says, computed in Python.

All policy (sizes, devices, shares, the kernel command line) lives here; the
Jinja templates in ``templates/`` only render a DomainSpec. Nothing a pod does
not need is in it: no graphics, no USB, no sound, no network until CNI exists.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from vmcri.handlers.vm.options import VmOptions
from vmcri.model import Resources

AGENT_PORT_NAME = "vmcri.agent"
SHARE_TAG = "vmcri-pod"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Share:
    tag: str  # the mount tag the guest mounts by
    source: str  # host directory: a dedicated per-pod directory, never more
    readonly: bool
    driver: str  # "9p" or "virtiofs"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    domain_type: str  # "kvm" or "qemu" (TCG)
    machine: str  # "q35" or "microvm"
    memory_mib: int
    vcpus: int
    kernel: str
    initrd: str
    cmdline: str
    root_image: str  # read-only guest root image (virtio-blk)
    agent_socket: str  # host unix socket of the agent's virtio-serial port
    agent_port_name: str
    console_log: str
    shares: tuple[Share, ...]
    run_as_root: bool  # 9p passthrough needs QEMU to own files as any uid


@dataclass(frozen=True)
class GuestFiles:
    kernel: str
    initrd: str
    root_image: str


def domain_name(sandbox_id: str) -> str:
    return f"vmcri-{sandbox_id}"


def domain_uuid(sandbox_id: str) -> str:
    return str(uuid.UUID(hex=sandbox_id[:32]))


def size_vm(
    container_limits: list[Resources], pod_limits: Resources, options: VmOptions
) -> tuple[int, int]:
    """Memory (MiB) and vCPUs: the containers' limits plus the configured overhead.

    Without any memory limit the default applies; CPU limits (quota/period) are
    rounded up to whole vCPUs.
    """
    memory = pod_limits.memory_limit_in_bytes or sum(
        r.memory_limit_in_bytes for r in container_limits
    )
    memory_mib = math.ceil(memory / MIB) if memory else options.default_memory_mib
    cpus = 0.0
    for r in [pod_limits] if pod_limits.cpu_quota > 0 else container_limits:
        if r.cpu_quota > 0 and r.cpu_period > 0:
            cpus += r.cpu_quota / r.cpu_period
    vcpus = max(1, math.ceil(cpus)) if cpus else 0
    return memory_mib + options.overhead_memory_mib, max(1, vcpus + options.overhead_vcpus)


def kernel_cmdline(debug: bool, share_target: str) -> str:
    """The guest kernel command line; images/guest/init reads the ``vmcri.*`` keys."""
    parts = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "vmcri.root=/dev/vda",
        f"vmcri.agent_port={AGENT_PORT_NAME}",
        f"vmcri.share={SHARE_TAG}:{share_target}",
    ]
    parts.append("vmcri.debug=1" if debug else "quiet")
    return " ".join(parts)
