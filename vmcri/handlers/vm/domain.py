"""DomainSpec: everything a VM's libvirt domain says, computed in Python.

All policy (sizes, devices, shares, the kernel command line) lives here; the
Jinja templates in ``templates/`` only render a DomainSpec. Nothing a pod does
not need is in it: no graphics, no USB, no sound; one NIC when the pod has a
network namespace (``nic.py`` plans it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from vmcri.handlers.vm.launcher import (
    JAIL_READONLY,
    JAIL_ROOT,
    JAIL_WRITABLE,
    VIRTIOFSD,
    real_binary,
)

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
class Disk:
    """A SCSI disk hotplugged into a running pod VM (``disks.py`` says which and where);
    ``templates/devices/disk.xml.j2`` renders it."""

    source: str  # the host file
    lun: int
    readonly: bool

    @property
    def target(self) -> str:
        """libvirt's name for it (``sda``, ``sdb`` ... ``sdaa``): unique in the domain."""
        return "sd" + _letters(self.lun)

    @property
    def cache(self) -> str:
        # Layers go through the host's page cache, which every pod reading the layer
        # shares; the writable disk bypasses it (the guest caches its own writes, and the
        # host keeps no dirty copy charged to nobody).
        return "writeback" if self.readonly else "none"


@dataclass(frozen=True)
class Jail:
    """All QEMU may reach of the host's files (the launcher makes it its root,
    ``launcher.py: enter_jail``), each at its own path: ``writable`` as the host has them
    (what is mounted below them too), ``readonly`` read-only; ``root`` is an empty
    directory of the VM's own where the launcher mounts the jail (in QEMU's namespace
    only). Paths QEMU opens after it starts (a hotplugged disk) must be below one of them.
    """

    root: str
    writable: tuple[str, ...]
    readonly: tuple[str, ...]

    @property
    def launcher_args(self) -> tuple[str, ...]:
        args = [JAIL_ROOT, self.root]
        for option, paths in ((JAIL_WRITABLE, self.writable), (JAIL_READONLY, self.readonly)):
            for path in paths:
                args += [option, path]
        return tuple(args)


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
# Memory a running VM grows by: one virtio-mem device over a region of its own, plugged
# and unplugged by QEMU's "requested-size" (``Hypervisor.plug_memory``).
HOTPLUG_MEMORY_ID = "vmcri.hotmem"  # its memory backend
VIRTIO_MEM_ID = "vmcri.vmem"  # the device, /machine/peripheral/<id> in QOM
# Its PCI slot on q35's root bus, fixed: QEMU creates the devices of <qemu:commandline>
# before libvirt's and would take the slot libvirt gave its first root port; libvirt
# numbers root ports from 0x01 up and uses 0x1e only for a dmi-to-pci bridge (legacy PCI
# devices, which a pod VM has none of), so this one stays ours.
VIRTIO_MEM_SLOT = "0x1e"
# PCIe root ports of a templated VM: libvirt puts each PCI device (disk, serial, share,
# USB) on one and the NIC hotplugged after a restore needs a free one.
HOTPLUG_PORTS = 8


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    domain_type: str  # "kvm" or "qemu" (TCG)
    machine: str  # "q35" or "microvm"
    memory_mib: int  # boot RAM
    vcpus: int  # vCPUs at boot
    kernel: str
    initrd: str
    cmdline: str
    root_image: str  # read-only guest root image (virtio-blk)
    agent_socket: str  # host unix socket of the agent's virtio-serial port
    agent_port_name: str
    agent_vsock_cid: int  # > 0: the agent listens on vsock instead of the serial port
    console_log: str
    shares: tuple[Share, ...]
    run_as_root: bool  # 9p passthrough, and the pods' disks by path (designer.py)
    virtiofsd: str = ""  # the virtiofsd binary, for virtiofs shares (the launcher's)
    emulator: str = ""  # QEMU (the launcher's, ``launcher.py``); "": libvirt's default
    tcg_cache_mib: int = 0  # > 0: cap QEMU's translated-code cache (software emulation)
    nic: Nic | None = None  # None: no network device (host-network pods, no CNI)
    # VM templates (template.py): RAM in a file and spare ports for the NIC hotplugged
    # after a restore. Template and clones must have the very same devices. (Every VM has
    # a VM generation ID, templates/domain.xml.j2: the guest reseeds its RNG on a restore.)
    template_memory: TemplateMemory | None = None
    # Growth (sizing.py): vCPUs up to this maximum (0: no more), hotplugged or present from
    # boot (``plugs_vcpus``), and a virtio-mem region of this size beyond the boot RAM.
    max_vcpus: int = 0
    hotplug_memory_mib: int = 0
    # The virtio-scsi controller the pod's writable and layer disks are hotplugged onto
    # (``disks.py``): every pod VM has one, a template too (its clones' disks come later).
    scsi: bool = False
    # Start paused, waiting for a saved state (``-incoming defer``): a pod checkpoint's
    # stream for a cold-booted design; a template clone says so in ``template_memory``.
    incoming: bool = False
    jail: Jail | None = None  # None: QEMU sees the host's files (as root, capabilities narrowed)

    @property
    def vcpu_max(self) -> int:
        return max(self.vcpus, self.max_vcpus)

    @property
    def plugs_vcpus(self) -> bool:
        return plugs_vcpus(self.domain_type)

    @property
    def hotplug_ports(self) -> int:
        return HOTPLUG_PORTS if self.template_memory is not None else 0

    @property
    def qemu_args(self) -> tuple[str, ...]:
        """Extra QEMU arguments (``<qemu:commandline>``) that libvirt's XML cannot say."""
        args: list[str] = []
        memory = self.template_memory
        if memory is not None:
            path = memory.path.replace(",", ",,")  # QEMU's option syntax: a comma is doubled
            backend = (
                f"memory-backend-file,id={TEMPLATE_MEMORY_ID},mem-path={path},"
                f"share={'on' if memory.shared else 'off'},size={self.memory_mib}M"
            )
            # libvirt's own "-machine memory-backend=pc.ram" comes first; the last one wins.
            args += ["-object", backend, "-machine", f"memory-backend={TEMPLATE_MEMORY_ID}"]
        if self.hotplug_memory_mib:
            # libvirt declares memory hotplug only with DIMM slots and a NUMA node, whose
            # RAM would then replace the template's file-backed one; QEMU merges -m options.
            # virtiofsd must reach all guest memory: shared then, like the boot RAM.
            # unplugged-inaccessible=on: the guest must not touch what is not plugged (its
            # driver acks this; Linux has since 5.16). QEMU 7.2 does not enforce it: the
            # region stays mapped, so a guest that drops its driver can still write all of
            # it. What bounds that is the region's size and the pod's cgroup (sizing.py).
            kind = "memory-backend-memfd,share=on" if self.shared_memory else "memory-backend-ram"
            maxmem = self.memory_mib + self.hotplug_memory_mib
            args += [
                "-m", f"maxmem={maxmem}M",
                "-object", f"{kind},id={HOTPLUG_MEMORY_ID},size={self.hotplug_memory_mib}M,"
                "reserve=off",
                "-device", f"virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={HOTPLUG_MEMORY_ID},"
                "node=0,requested-size=0,unplugged-inaccessible=on,"
                f"bus=pcie.0,addr={VIRTIO_MEM_SLOT}",
            ]  # fmt: skip
        if self.incoming or (memory is not None and memory.incoming):
            args += ["-incoming", "defer"]
        if self.jail is not None:
            args += self.jail.launcher_args
        return tuple(args)

    @property
    def shared_memory(self) -> bool:
        """virtiofs needs the guest's memory shared with virtiofsd."""
        return any(share.driver == "virtiofs" for share in self.shares)


def plugs_vcpus(domain_type: str) -> bool:
    """Whether vCPUs beyond the boot count are hotplugged (KVM) or present from boot.

    Under TCG, QEMU 7.2 (and later) cannot hotplug a vCPU safely: each vCPU thread takes a
    region of the translated-code cache when it starts, and aborts QEMU ("tcg_region_initial_
    alloc__locked: assertion failed") when the running vCPUs hold every region, as they do
    at the end of each cache cycle (the 32 MiB cache cycles within a pod's boot); a vCPU
    unplugged and plugged again aborts it too (a TCG context is never given back). So a TCG
    VM has its maximum of vCPUs from boot, the guest kernel starts the boot count
    (``maxcpus=``) and the agent onlines more as the VM grows.
    """
    return domain_type == "kvm"


def boot_vcpus(domain_type: str, vcpus: int, max_vcpus: int) -> int:
    """``kernel_cmdline``'s boot_vcpus: the vCPUs to start when more are present (or 0)."""
    return vcpus if max_vcpus > vcpus and not plugs_vcpus(domain_type) else 0


def domain_name(sandbox_id: str) -> str:
    return f"vmcri-{sandbox_id}"


def domain_uuid(sandbox_id: str) -> str:
    return str(uuid.UUID(hex=sandbox_id[:32]))


AGENT_VSOCK_PORT = 1024
FIRST_GUEST_CID = 3  # 0-2 are reserved (hypervisor, local, host)


def vsock_cid(sandbox_id: str) -> int:
    """A guest CID derived from the sandbox ID (stable across daemon restarts)."""
    return FIRST_GUEST_CID + int(sandbox_id[:8], 16) % (2**31 - FIRST_GUEST_CID)


def find_virtiofsd() -> str:
    """The virtiofsd binary of this host, or "" (Debian 12 does not package one); the
    launcher (``launcher.py``) execs the same one."""
    return real_binary(VIRTIOFSD)


# QEMU defaults to 1 GiB. A restored pod translates ~16 MiB of code by Ready and ~37 MiB
# by its first container running (QEMU's "info jit"): at 32 MiB the cache was flushed
# whole during that container's creation and everything hot translated again (its
# StartContainer took 0.3 s, 0.12 s at 64 MiB); 128 MiB was no faster. Only what is
# generated is host memory, so a pod's QEMU grows by at most 32 MiB more than before.
TCG_CACHE_MIB = 64


def kernel_cmdline(
    debug: bool,
    share_target: str,
    vsock: bool = False,
    share_driver: str = "9p",
    template: bool = False,
    oci_runtime: str = "runc",
    memory_hotplug: bool = False,
    boot_vcpus: int = 0,
) -> str:
    """The guest kernel command line; guest/init reads the ``vmcri.*`` keys.

    No 9p share is mounted at boot (QEMU cannot save a guest that mounted one: the agent
    mounts it when a container first has a volume, ``VmBackend.create_container``); a
    virtio-fs share, which cannot be saved anyway, is. A template loads the virtio-net
    driver for the NIC added later.
    With ``memory_hotplug`` the kernel onlines hotplugged memory itself (there is no udev
    in the guest), and makes no bounce buffers: with a memory region above 4 GiB it would
    reserve 64 MiB of them, which only a device limited to 32-bit DMA needs, and the VM's
    devices are all virtio without an IOMMU, which never bounce. ``boot_vcpus`` > 0: start
    only that many of the vCPUs present (``plugs_vcpus``: a TCG VM's others wait offline).
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
    if memory_hotplug:
        parts += ["memhp_default_state=online", "swiotlb=noforce"]
    if boot_vcpus:
        parts.append(f"maxcpus={boot_vcpus}")
    if template:
        parts.append("vmcri.virtio_ids=1")
    elif share_driver == "virtiofs":
        parts.append(f"vmcri.share={SHARE_TAG}:{share_target}:virtiofs")
    parts.append("vmcri.debug=1" if debug else "quiet")
    return " ".join(parts)


def _letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: the kernel's (and libvirt's) disk-name suffixes."""
    out = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        out = chr(ord("a") + rest) + out
    return out
