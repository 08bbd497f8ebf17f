"""DomainSpec: everything a VM's libvirt domain says, computed in Python.

All policy (sizes, devices, shares, the kernel command line) lives here; the
Jinja templates in ``templates/`` only render a DomainSpec. Nothing a pod does
not need is in it: no graphics, no USB, no sound; one NIC when the pod has a
network namespace (``nic.py`` plans it).
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import dataclass

from vmcri.errors import InvalidArgument
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
class Nic:
    """A virtio-net NIC on a tap that already exists (libvirt opens it, never creates it)."""

    mac: str  # the pod interface's MAC, so the guest answers ARP for the pod IP
    tap: str  # host tap device name (moved into the pod netns once QEMU holds it)
    mtu: int  # the pod interface's MTU, advertised to the guest driver (VIRTIO_NET_F_MTU)
    vhost: bool  # vhost-net data path (needs /dev/vhost-net); else QEMU's userspace one


@dataclass(frozen=True)
class TemplateMemory:
    """Guest RAM in a file: a template's (shared, written) or a clone's (private, COW).

    A template VM maps ``path`` MAP_SHARED, so its RAM ends up in the file when it is
    saved; a clone maps the same file MAP_PRIVATE (QEMU ``share=off``): the pages it
    reads come from the page cache, shared with every other clone of the template, and
    the pages it writes are copied into its own memory. No clone writes the file.
    """

    path: str
    shared: bool  # True: the template being made; False: a clone restored from it
    incoming: bool  # start paused, waiting for the saved device state (``-incoming defer``)


TEMPLATE_MEMORY_ID = "vmcri.ram"  # the RAM block's name; the same in template and clones
# PCIe root ports of a templated VM: libvirt puts each PCI device (disk, serial, share,
# USB) on one and the NIC hotplugged after a restore needs a free one.
HOTPLUG_PORTS = 8


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
    agent_vsock_cid: int  # > 0: the agent listens on vsock instead of the serial port
    console_log: str
    shares: tuple[Share, ...]
    run_as_root: bool  # 9p passthrough needs QEMU to own files as any uid
    virtiofsd: str = ""  # the virtiofsd binary, for virtiofs shares
    tcg_cache_mib: int = 0  # > 0: cap QEMU's translated-code cache (software emulation)
    nic: Nic | None = None  # None: no network device (host-network pods, no CNI)
    # VM templates (template.py): RAM in a file, a VM generation ID (the guest reseeds its
    # RNG when it changes, i.e. on every restore) and spare ports for the NIC hotplugged
    # after a restore. Template and clones must have the very same devices.
    template_memory: TemplateMemory | None = None

    @property
    def genid(self) -> bool:
        return self.template_memory is not None

    @property
    def hotplug_ports(self) -> int:
        return HOTPLUG_PORTS if self.template_memory is not None else 0

    @property
    def qemu_args(self) -> tuple[str, ...]:
        """Extra QEMU arguments (``<qemu:commandline>``) that libvirt's XML cannot say."""
        memory = self.template_memory
        if memory is None:
            return ()
        path = memory.path.replace(",", ",,")  # QEMU's option syntax: a comma is doubled
        backend = (
            f"memory-backend-file,id={TEMPLATE_MEMORY_ID},mem-path={path},"
            f"share={'on' if memory.shared else 'off'},size={self.memory_mib}M"
        )
        # libvirt's own "-machine memory-backend=pc.ram" comes first; the last one wins.
        args = ["-object", backend, "-machine", f"memory-backend={TEMPLATE_MEMORY_ID}"]
        if memory.incoming:
            args += ["-incoming", "defer"]
        return tuple(args)

    @property
    def shared_memory(self) -> bool:
        """virtiofs needs the guest's memory shared with virtiofsd."""
        return any(share.driver == "virtiofs" for share in self.shares)


@dataclass(frozen=True)
class GuestFiles:
    kernel: str
    initrd: str
    root_image: str


def domain_name(sandbox_id: str) -> str:
    return f"vmcri-{sandbox_id}"


def domain_uuid(sandbox_id: str) -> str:
    return str(uuid.UUID(hex=sandbox_id[:32]))


def host_memory_mib() -> int:
    """This host's MemTotal."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("/proc/meminfo has no MemTotal")


POD_RESOURCES = "config.linux.resources"
# QEMU's most vCPUs for the q35 and microvm machines (7.2: 288). More vCPUs than host
# CPUs is allowed: Kubernetes admits CPU limits above a node's count, and QEMU runs them.
MAX_VCPUS = 288


def size_vm(
    container_limits: list[Resources],
    pod_limits: Resources,
    options: VmOptions,
    host_memory: int | None = None,
) -> tuple[int, int]:
    """Memory (MiB) and vCPUs: the containers' limits plus the configured overhead.

    Without any memory limit the default applies; CPU limits (quota/period) are
    rounded up to whole vCPUs. Raises InvalidArgument naming the pod's resource field
    when the VM would need more memory than ``host_memory`` (MiB; this host's MemTotal
    by default) or more vCPUs than QEMU takes: the start would fail inside libvirt or
    QEMU, after work was done, with an error that names no field.
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
    total_mib = memory_mib + options.overhead_memory_mib
    total_vcpus = max(1, vcpus + options.overhead_vcpus)
    limit_mib = host_memory_mib() if host_memory is None else host_memory
    if total_mib > limit_mib:
        raise InvalidArgument(
            f"{POD_RESOURCES}.memory_limit_in_bytes: the VM would need {total_mib} MiB "
            f"(with {options.overhead_memory_mib} MiB overhead), the host has {limit_mib} MiB"
        )
    if total_vcpus > MAX_VCPUS:
        raise InvalidArgument(
            f"{POD_RESOURCES}.cpu_quota: the VM would need {total_vcpus} vCPUs "
            f"(with {options.overhead_vcpus} overhead), QEMU takes at most {MAX_VCPUS}"
        )
    return total_mib, total_vcpus


def check_fits(
    resources: Resources, memory_mib: int, vcpus: int, options: VmOptions, field: str
) -> None:
    """Refuse a container limit the pod's VM cannot honour (it cannot grow yet).

    The VM has ``memory_mib`` (of which the configured overhead is the guest's own) and
    ``vcpus``; a container whose memory limit exceeds the rest, or whose CPU limit needs
    more vCPUs, would run with a limit the VM can never give it. ``field`` is the
    request's resources field (e.g. ``config.linux.resources``). Raises InvalidArgument.
    """
    usable_mib = memory_mib - options.overhead_memory_mib
    limit = resources.memory_limit_in_bytes
    if limit and math.ceil(limit / MIB) > usable_mib:
        raise InvalidArgument(
            f"{field}.memory_limit_in_bytes: {math.ceil(limit / MIB)} MiB is more than the pod "
            f"VM can give a container ({usable_mib} MiB of its {memory_mib} MiB; the VM "
            f"cannot grow): size the pod with PodSandboxConfig.linux.resources"
        )
    if resources.cpu_quota > 0 and resources.cpu_period > 0:
        needed = math.ceil(resources.cpu_quota / resources.cpu_period)
        if needed > vcpus:
            raise InvalidArgument(
                f"{field}.cpu_quota: the limit needs {needed} vCPUs, the pod VM has {vcpus} "
                "(the VM cannot grow): size the pod with PodSandboxConfig.linux.resources"
            )


AGENT_VSOCK_PORT = 1024
FIRST_GUEST_CID = 3  # 0-2 are reserved (hypervisor, local, host)


def vsock_cid(sandbox_id: str) -> int:
    """A guest CID derived from the sandbox ID (stable across daemon restarts)."""
    return FIRST_GUEST_CID + int(sandbox_id[:8], 16) % (2**31 - FIRST_GUEST_CID)


VIRTIOFSD_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")


def find_virtiofsd() -> str:
    """The virtiofsd binary of this host, or "" (Debian 12 does not package one)."""
    for candidate in VIRTIOFSD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("virtiofsd") or ""


TCG_CACHE_MIB = 32  # QEMU defaults to 1 GiB, of which a booted guest touches ~80 MiB


def kernel_cmdline(
    debug: bool,
    share_target: str,
    vsock: bool = False,
    share_driver: str = "9p",
    template: bool = False,
    oci_runtime: str = "runc",
) -> str:
    """The guest kernel command line; guest/init reads the ``vmcri.*`` keys.

    A template mounts no share (a 9p device the guest mounted cannot be saved; the agent
    mounts it in SetupSandbox) and loads the virtio-net driver for the NIC added later.
    """
    agent = (
        f"vmcri.agent_vsock={AGENT_VSOCK_PORT}" if vsock else f"vmcri.agent_port={AGENT_PORT_NAME}"
    )
    parts = [
        "console=ttyS0",
        "reboot=k",
        "panic=-1",
        "vmcri.root=/dev/vda",
        agent,
        f"vmcri.oci_runtime={oci_runtime}",
    ]
    if template:
        parts.append("vmcri.virtio_ids=1")
    else:
        parts.append(
            f"vmcri.share={SHARE_TAG}:{share_target}"
            + (":virtiofs" if share_driver == "virtiofs" else "")
        )
    parts.append("vmcri.debug=1" if debug else "quiet")
    return " ".join(parts)
