"""Booting a pod's VM: restored from a template or cold-booted, set up, or undone.

``VmBoot`` is the part of ``VmBackend`` (backend.py) that starts the VM of a pod whose
host-side directories are ready: a restore from a template of the pod's shape (see
``template_vms.py``) when there is one, a cold boot from the guest's kernel when there is
none or the restore fails, then the pod's settings in the guest. The domain comes from
the one design function (``designer.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vmcri.agent import types as agent_types
from vmcri.agent.types import AgentInfo
from vmcri.errors import (
    AgentUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    HypervisorError,
    ProtocolError,
    TemplateUnusable,
    VmcriError,
)
from vmcri.handlers.vm import nic
from vmcri.handlers.vm.accel import AccelChoice
from vmcri.handlers.vm.designer import Hardware, HostSide, design_domain
from vmcri.handlers.vm.disks import WRITABLE_LUN, PodDisks
from vmcri.handlers.vm.domain import (
    TCG_CACHE_MIB,
    DomainSpec,
    TemplateMemory,
    domain_name,
    domain_uuid,
    plugs_vcpus,
    vsock_cid,
)
from vmcri.handlers.vm.guest_image import GuestImage
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.launcher import VIRTIOFSD, launcher_path
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.render import render_domain, render_nic
from vmcri.handlers.vm.saved_vm import TEMPLATE, SavedPod
from vmcri.handlers.vm.sizing import VmSize, boot_size, size_vm
from vmcri.handlers.vm.spec import pod_files, shares_pid
from vmcri.handlers.vm.template import Template, Templates
from vmcri.network.tap import TapDevices
from vmcri.store.records import SandboxRecord
from vmcri.supervisor.containers import SupervisedContainers

log = logging.getLogger(__name__)

RESTORE_TIMEOUT_S = 30.0  # QEMU loads a few hundred KiB of device state
RESTORE_AGENT_TIMEOUT_S = 15.0  # a restored agent answers at once; more means it is broken
NIC_WAIT_S = 10  # a hotplugged NIC shows up in the guest
# Bytes of the host's randomness a restored guest mixes into its RNG at SetupSandbox.
ENTROPY_BYTES = 64
# A restore that fails for one of these cold-boots the pod; anything else (a bad sysctl,
# a pod the host cannot hold) would fail a cold boot the same way.
RESTORE_FAILURES = (HypervisorError, AgentUnavailable, DeadlineExceeded, ProtocolError,
                    FailedPrecondition)  # fmt: skip


class VmBoot:
    """Starting a pod's VM; a part of ``VmBackend``, which sets what is declared here."""

    _options: VmOptions
    _accel: AccelChoice
    _hypervisor: Hypervisor
    _taps: TapDevices
    _vsock: bool
    _virtiofsd: str
    _share_driver: str
    _containers: SupervisedContainers
    _templates: Templates | None
    _disks: PodDisks

    if TYPE_CHECKING:

        def _layout(self, sandbox_id: str) -> SandboxLayout: ...

        def _alive(self, name: str) -> bool: ...

        def _placer(self, sandbox_id: str) -> Callable[[int], None]: ...

        def _release_share(self, sandbox_id: str, layout: SandboxLayout) -> None: ...

    def _boot(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None,
        template: Template | None,
    ) -> tuple[DomainSpec, agent_types.SandboxFiles]:
        """Start the pod's VM from ``template`` (None: cold boot), falling back to a cold
        boot when the restore fails, and set the pod up in it; returns the VM's domain
        and the pod's files in the guest. Raises like the hypervisor and the agent."""
        started = time.monotonic()
        spec: DomainSpec | None = None
        if template is not None:
            try:
                spec, info, timings = self._restore(sandbox, layout, guest, plan, template)
                guest_files = self._setup(sandbox, spec, plan, restored=True)
            except RESTORE_FAILURES as exc:
                log.warning(
                    "sandbox %s: restore from VM template %s failed, cold boot: %s",
                    sandbox.id,
                    template.shape.label(),
                    exc.message,
                )
                self._undo_start(sandbox)
                if isinstance(exc, TemplateUnusable) and self._templates is not None:
                    self._templates.broken(template.shape, exc.message)
                spec = None
                started = time.monotonic()
        if spec is None:
            spec, info, timings = self._cold_boot(sandbox, layout, guest, plan)
            guest_files = self._setup(sandbox, spec, plan, restored=False)
        restored = spec.template_memory is not None
        set_up = time.monotonic()
        self._release_share(sandbox.id, layout)
        timings["setup_s"] = round(set_up - started - timings["agent_ready_s"], 3)
        timings["release_share_s"] = round(time.monotonic() - set_up, 3)
        if self._templates is not None:
            self._templates.count(restored)
        log.info(
            "sandbox %s: VM up (%s)",
            sandbox.id,
            f"restored from template {template.shape.label()}"
            if restored and template is not None
            else "cold boot",
            extra={
                "start": "restored" if restored else "cold",
                "agent_uptime_s": round(info.uptime_ns / 1e9, 3),
                "sandbox_ready_s": round(time.monotonic() - started, 3),
                **timings,
            },
        )
        return spec, guest_files

    def _boot_size(self, memory_mib: int, vcpus: int, pod_limited: bool = False) -> VmSize:
        hotplug = plugs_vcpus(self._accel.domain_type)
        return boot_size(
            memory_mib, vcpus, self._options, hotplug_vcpus=hotplug, pod_memory_limit=pod_limited
        )

    def _hardware(self, memory_mib: int, vcpus: int, pod_limited: bool = False) -> Hardware:
        """The machine of a VM booting at ``memory_mib`` and ``vcpus``: a cold-booted one,
        or a template (``pod_limited``: a pod-level memory limit, see ``_boot_size``)."""
        size = self._boot_size(memory_mib, vcpus, pod_limited)
        return Hardware(
            domain_type=self._accel.domain_type,
            machine=self._options.machine,
            memory_mib=memory_mib,
            vcpus=vcpus,
            max_vcpus=size.max_vcpus,
            hotplug_memory_mib=size.hotplug_memory_mib,
            tcg_cache_mib=TCG_CACHE_MIB if self._accel.degraded else 0,
            share_driver=self._share_driver,
        )

    def _domain_spec(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None = None,
    ) -> DomainSpec:
        """The domain of the pod's cold-booted VM."""
        memory_mib, vcpus = size_vm([], sandbox.config.resources, self._options)
        return design_domain(
            self._hardware(memory_mib, vcpus, pod_memory_limited(sandbox)),
            guest,
            _host_side(sandbox.id, layout),
            oci_runtime=self._options.oci_runtime,
            debug=log.isEnabledFor(logging.DEBUG),
            vsock_cid=vsock_cid(sandbox.id) if self._vsock else 0,
            virtiofsd=launcher_path(VIRTIOFSD) if self._virtiofsd else "",
            nic=plan.nic if plan is not None else None,
        )

    def _cold_boot(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None,
    ) -> tuple[DomainSpec, AgentInfo, dict[str, float]]:
        """Boot the pod's VM from its kernel; raises like the hypervisor and the agent."""
        name = domain_name(sandbox.id)
        spec = self._domain_spec(sandbox, layout, guest, plan)
        started = time.monotonic()
        if plan is not None:
            nic.plug(self._taps, plan)
        self._hypervisor.start(name, render_domain(spec), self._placer(sandbox.id))
        if plan is not None:
            nic.attach(self._taps, plan)
        domain_up = time.monotonic()
        self._attach_writable(name, layout)  # the boot's own SCSI scan finds it
        link = self._containers.link(sandbox)
        info = link.wait_ready(self._options.boot_timeout_s, alive=lambda: self._alive(name))
        check_guest_version(info.agent_version, guest)
        timings = {
            "domain_start_s": round(domain_up - started, 3),
            "agent_ready_s": round(time.monotonic() - started, 3),
        }
        return spec, info, timings

    def _restore(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None,
        template: Template,
    ) -> tuple[DomainSpec, AgentInfo, dict[str, float]]:
        """Start the pod's VM from a template: the saved guest resumes with the pod's own
        host-side files; its NIC (with the pod's MAC) is hotplugged afterwards.

        Raises HypervisorError (libvirt or QEMU refused), AgentUnavailable,
        FailedPrecondition (the agent is of another image), the NIC's errors.
        """
        name = domain_name(sandbox.id)
        spec = design_domain(
            template.shape.hardware(),
            guest,
            _host_side(sandbox.id, layout),
            oci_runtime=self._options.oci_runtime,
            template_memory=TemplateMemory(str(template.memory), shared=False, incoming=True),
        )
        started = time.monotonic()
        if plan is not None:
            nic.plug(self._taps, plan)
        try:
            self._hypervisor.restore(
                name,
                render_domain(spec),
                template.state,
                RESTORE_TIMEOUT_S,
                self._placer(sandbox.id),
            )
        except HypervisorError as exc:
            # The template itself failed (its state, its guest): it goes, the pod cold-boots.
            raise TemplateUnusable(f"restore failed: {exc.message}") from exc
        restored = time.monotonic()
        # The pod's devices go in before the agent's first answer, not after it: the
        # resumed guest scans the new SCSI LUN and PCI slot while the host waits for that
        # answer, where in turn they cost the host's attach, then the guest's scan, then
        # SetupSandbox's wait for the disk, one after the other.
        self._attach_writable(name, layout)
        if plan is not None:
            self._hypervisor.attach_device(name, render_nic(plan.nic))
            nic.attach(self._taps, plan)
        attached = time.monotonic()
        try:
            link = self._containers.link(sandbox)
            info = link.wait_ready(RESTORE_AGENT_TIMEOUT_S, alive=lambda: self._alive(name))
            check_guest_version(info.agent_version, guest)
        except (HypervisorError, AgentUnavailable, FailedPrecondition) as exc:
            raise TemplateUnusable(f"restore failed: {exc.message}") from exc
        timings = {
            "restore_s": round(restored - started, 3),
            "attach_s": round(attached - restored, 3),
            "domain_start_s": round(attached - started, 3),
            "agent_ready_s": round(time.monotonic() - started, 3),
        }
        return spec, info, timings

    def _boot_saved(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None,
        hardware: Hardware,
        saved: SavedPod,
    ) -> tuple[DomainSpec, agent_types.SandboxFiles]:
        """Start the pod's VM from a pod checkpoint (``saved_vm.py``): the machine it was
        saved from (a template clone's design or a cold boot's), waiting for its state;
        the saved writable disk's data in the pod's own writable.img; its disks at their
        LUNs and its NIC (the new pod's) plugged as they were; then the stream; then the
        pod's new settings (its address, the wall clock, the NIC's new MAC) in the guest,
        which runs on with every process it had (and reseeds its RNG: a new VM
        generation ID).

        Raises HypervisorError, AgentUnavailable, FailedPrecondition, InvalidArgument (the
        checkpoint's data), DeadlineExceeded.
        """
        started = time.monotonic()
        name = domain_name(sandbox.id)
        if WRITABLE_LUN in saved.vm.disks:
            if not layout.writable_image.is_file():
                raise FailedPrecondition(
                    "path: the checkpoint holds a writable disk and this handler gives pods "
                    "none (writable_layer_mib = 0)"
                )
            fd = os.open(layout.writable_image, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                saved.write_writable(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        template = saved.vm.machine == TEMPLATE
        spec = (
            self._saved_template_design(sandbox, layout, guest, hardware)
            if template
            else dataclasses.replace(self._domain_spec(sandbox, layout, guest, plan), incoming=True)
        )
        if plan is not None:
            nic.plug(self._taps, plan)
        # Waits for the stream; the "cont" libvirt sends makes it run once that is in.
        self._hypervisor.start(name, render_domain(spec), self._placer(sandbox.id))
        disks = {lun: layout.writable_image for lun in saved.vm.disks if lun == WRITABLE_LUN}
        self._disks.attach_at(name, {**disks, **saved.layers}, layout.layer_links)
        if plan is not None:
            if template:  # a template clone's NIC was hotplugged; a cold boot's is in the XML
                self._hypervisor.attach_device(name, render_nic(plan.nic))
            nic.attach(self._taps, plan)
        saved.load(name)
        loaded = time.monotonic()
        link = self._containers.link(sandbox)
        info = link.wait_ready(RESTORE_AGENT_TIMEOUT_S, alive=lambda: self._alive(name))
        check_guest_version(info.agent_version, guest)
        files = self._setup(sandbox, spec, plan, restored=True, saved_mac=saved.vm.mac)
        log.info(
            "sandbox %s: VM loaded from a checkpoint",
            sandbox.id,
            extra={
                "start": "checkpoint",
                "agent_uptime_s": round(info.uptime_ns / 1e9, 3),
                "load_s": round(loaded - started, 3),
                "sandbox_ready_s": round(time.monotonic() - started, 3),
            },
        )
        return spec, files

    def _saved_template_design(
        self, sandbox: SandboxRecord, layout: SandboxLayout, guest: GuestImage, hardware: Hardware
    ) -> DomainSpec:
        """A template clone's domain waiting for a checkpoint's stream. Its RAM comes
        whole from the stream (zero pages as flags): a private map of an empty file."""
        ram = layout.disk / "checkpoint.ram"
        fd = os.open(ram, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)  # fmt: skip
        try:
            os.ftruncate(fd, hardware.memory_mib << 20)
        finally:
            os.close(fd)
        return design_domain(
            hardware,
            guest,
            _host_side(sandbox.id, layout),
            oci_runtime=self._options.oci_runtime,
            template_memory=TemplateMemory(str(ram), shared=False, incoming=True),
        )

    def _attach_writable(self, name: str, layout: SandboxLayout) -> int | None:
        """Hotplug the pod's writable disk (once, when the pod has one); returns its LUN.
        Raises HypervisorError."""
        image = layout.writable_image
        return self._disks.attach_writable(name, image) if image.is_file() else None

    def _setup(
        self,
        sandbox: SandboxRecord,
        spec: DomainSpec,
        plan: nic.NicPlan | None,
        restored: bool,
        saved_mac: str = "",
    ) -> agent_types.SandboxFiles:
        """The pod's settings in the guest. A restored one sets the clock the template was
        saved with to now, waits for its hotplugged NIC and reseeds its RNG from the host's
        randomness (a VM generation ID reseeds it too, at the restore; this also covers
        what a pool VM's guest did between its restore and its pod). Either mounts its writable
        disk (hotplugged as the VM started) where its containers' upper dirs go; neither
        mounts the pod's share yet (``VmBackend.create_container`` does, for a volume)."""
        hostname, hosts, resolv = pod_files(sandbox)
        share_pid = shares_pid(sandbox.config)
        # Attached already as the VM started (``_restore``, ``_cold_boot``): found, not again.
        writable_lun = self._attach_writable(spec.name, self._layout(sandbox.id))
        files = self._containers.link(sandbox).client.setup_sandbox(
            hostname=hostname,
            hosts=hosts,
            resolv_conf=resolv,
            sysctls=dict(sandbox.config.sysctls),
            interfaces=(dataclasses.replace(plan.guest, saved_mac=saved_mac),)
            if plan is not None
            else (),
            wall_clock_ns=time.time_ns() if restored else 0,
            nic_wait_s=NIC_WAIT_S if restored and plan is not None else 0,
            share_pid=share_pid,
            writable_lun=writable_lun,
            entropy=os.urandom(ENTROPY_BYTES) if restored else b"",
        )
        if share_pid and not files.pid_ns_path:
            raise ProtocolError("the guest agent made no PID namespace for the pod")
        return files

    def _undo_start(self, sandbox: SandboxRecord) -> None:
        """Undo a start that failed half-way (domain, agent link, tap, sockets), keeping
        the pod's directories and mounts for the next attempt."""
        layout = self._layout(sandbox.id)
        self._containers.drop_link(sandbox.id)
        try:
            self._hypervisor.destroy(domain_name(sandbox.id))
        except HypervisorError as exc:
            log.error("sandbox %s: destroy failed: %s", sandbox.id, exc.message)
        try:
            nic.unplug(self._taps, sandbox.id, sandbox.network)
        except VmcriError as exc:
            log.error("sandbox %s: NIC removal failed: %s", sandbox.id, exc.message)
        layout.agent_socket.unlink(missing_ok=True)


def _host_side(sandbox_id: str, layout: SandboxLayout) -> HostSide:
    return HostSide(
        name=domain_name(sandbox_id),
        uuid=domain_uuid(sandbox_id),
        agent_socket=layout.agent_socket,
        console_log=layout.console_log,
        share=layout.share,
        jail_root=layout.jail,
        disks=layout.disk,
    )


def started_size(spec: DomainSpec) -> VmSize:
    """The size of a VM just started from ``spec`` (cold or restored), and its maxima."""
    return VmSize(
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        boot_memory_mib=spec.memory_mib,
        max_memory_mib=spec.memory_mib + spec.hotplug_memory_mib,
        max_vcpus=spec.vcpu_max,
    )


def pod_memory_limited(sandbox: SandboxRecord) -> bool:
    """kubelet sent a pod-level memory limit: the VM boots at it and never outgrows it."""
    return sandbox.config.resources.memory_limit_in_bytes > 0


def check_guest_version(agent_version: str, guest: GuestImage) -> None:
    """The agent must come from the image we booted; raises FailedPrecondition."""
    _, _, image = agent_version.partition("+")
    if image != guest.version[:12]:
        raise FailedPrecondition(
            f"the guest agent reports image {image or 'unknown'!r} but {guest.version[:12]!r} "
            "was booted; rebuild the guest image (scripts/build-guest-image.sh)"
        )
