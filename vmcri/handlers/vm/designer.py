"""The one design function: every ``DomainSpec`` vmcri starts is made here.

``domain.py`` holds the policy of each part (devices, kernel command line); this puts the
parts together for one VM, as nova's ``designer.py`` does over its plain config objects.
A cold-booted pod, a template VM and a clone restored from it differ only in what
``design_domain`` is told: the machine (``Hardware``: a template's is its ``Shape``'s, so
its clones see the very devices it was saved with), the host-side names and paths
(``HostSide``), and ``template_memory`` (a template or a clone: RAM in a file, a guest that
mounts its share only when told, no vsock, no virtiofs, the NIC hotplugged later).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmcri.handlers.vm.domain import (
    AGENT_PORT_NAME,
    SHARE_TAG,
    DomainSpec,
    Jail,
    Nic,
    Share,
    TemplateMemory,
    boot_vcpus,
    kernel_cmdline,
)
from vmcri.handlers.vm.guest_image import GuestImage
from vmcri.handlers.vm.launcher import QEMU, launcher_path
from vmcri.handlers.vm.layout import GUEST_SHARE, LAYER_LINKS


@dataclass(frozen=True)
class Hardware:
    """The machine the guest sees: the same in a template and every clone of it."""

    domain_type: str  # "kvm" or "qemu" (TCG)
    machine: str
    memory_mib: int  # boot RAM
    vcpus: int  # vCPUs at boot
    max_vcpus: int  # what it may grow to (sizing.py)
    hotplug_memory_mib: int  # its virtio-mem region; 0: none
    tcg_cache_mib: int  # > 0: software emulation with a capped code cache
    share_driver: str  # "9p" or "virtiofs"


@dataclass(frozen=True)
class HostSide:
    """What one VM has of its own on the host."""

    name: str
    uuid: str
    agent_socket: Path
    console_log: Path
    share: Path
    # QEMU's jail (``domain.Jail``): an empty directory for its root, and the VM's own
    # directory of disks (written by QEMU; its ``layers/`` below, read-only: the links
    # ``disks.py`` makes to the image layers the pod uses). None: no jail.
    jail_root: Path | None = None
    disks: Path | None = None


def _jail(host: HostSide, guest: GuestImage, memory: TemplateMemory | None) -> Jail | None:
    if host.jail_root is None:
        return None
    writable = [host.share]
    readonly = [guest.kernel, guest.initrd, guest.root_image]
    if host.disks is not None:
        writable.append(host.disks)
        readonly.append(host.disks / LAYER_LINKS)
    if memory is not None:
        # A clone maps the template's RAM private, but QEMU 7.2 opens it read-write all
        # the same (``readonly=on`` would make it ROM; 8.2's ``rom=off`` tells the two
        # apart): the one file of the host a clone's QEMU could write without needing to.
        writable.append(Path(memory.path))
    return Jail(
        str(host.jail_root), tuple(str(p) for p in writable), tuple(str(p) for p in readonly)
    )


def design_domain(
    hardware: Hardware,
    guest: GuestImage,
    host: HostSide,
    *,
    oci_runtime: str,
    template_memory: TemplateMemory | None = None,
    debug: bool = False,
    vsock_cid: int = 0,
    virtiofsd: str = "",
    nic: Nic | None = None,
) -> DomainSpec:
    """The domain of a VM. ``template_memory``: a template or a clone of one (see the
    module docstring); ``vsock_cid`` > 0: the agent answers on vsock; ``virtiofsd``: the
    launcher of the share's virtio-fs daemon; ``nic``: the NIC it boots with."""
    return DomainSpec(
        name=host.name,
        uuid=host.uuid,
        domain_type=hardware.domain_type,
        machine=hardware.machine,
        memory_mib=hardware.memory_mib,
        vcpus=hardware.vcpus,
        max_vcpus=hardware.max_vcpus,
        hotplug_memory_mib=hardware.hotplug_memory_mib,
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        cmdline=kernel_cmdline(
            debug,
            GUEST_SHARE,
            vsock=vsock_cid > 0,
            share_driver=hardware.share_driver,
            template=template_memory is not None,
            oci_runtime=oci_runtime,
            memory_hotplug=hardware.hotplug_memory_mib > 0,
            boot_vcpus=boot_vcpus(hardware.domain_type, hardware.vcpus, hardware.max_vcpus),
        ),
        root_image=str(guest.root_image),
        agent_socket=str(host.agent_socket),
        agent_port_name=AGENT_PORT_NAME,
        agent_vsock_cid=vsock_cid,
        console_log=str(host.console_log),
        shares=(Share(SHARE_TAG, str(host.share), False, hardware.share_driver),),
        # 9p passthrough must own files as any uid; and the pod's disks (disks.py) are
        # files in the host's 0700 directories, which libvirt 9.0 can hand QEMU only by
        # path when hotplugged (its fdgroup passing works at start-up only).
        run_as_root=True,
        virtiofsd=virtiofsd,
        emulator=launcher_path(QEMU),
        tcg_cache_mib=hardware.tcg_cache_mib,
        nic=nic,
        template_memory=template_memory,
        scsi=True,
        jail=_jail(host, guest, template_memory),
    )
