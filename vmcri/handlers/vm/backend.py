"""The ``vm`` backend: one QEMU/KVM virtual machine per pod sandbox.

A sandbox is a transient libvirt domain booted straight into our kernel and
initrd; its agent (``vmcri agent``) answers on a virtio-serial port. Container
root filesystems are overlays assembled on the host over the image store's
unpacked layers, mounted in a host-only directory, and reach the guest through
a read-only bind of it, the pod's one share (see ``layout.py``); the agent runs
them with runc inside the guest. Output and exits come back as agent events:
the host writes the CRI log files kubelet reads, and an exit file per
container so a daemon restart loses nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Sequence
from pathlib import Path

from vmcri.agent import types as agent_types
from vmcri.agent.client import AgentClient
from vmcri.agent.types import AgentInfo, Mount9p
from vmcri.errors import (
    AgentUnavailable,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    HostCommandError,
    HypervisorError,
    ProtocolError,
    TemplateUnusable,
    Unimplemented,
    VmcriError,
)
from vmcri.handlers.base import (
    Condition,
    HandlerFeatures,
    ImageInfo,
    PortConnection,
    SandboxStarted,
)
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm import nic
from vmcri.handlers.vm.accel import AccelChoice, choose_accel, kvm_usable
from vmcri.handlers.vm.cgroup import Placement, PodCgroups, VmCgroups
from vmcri.handlers.vm.domain import (
    AGENT_PORT_NAME,
    AGENT_VSOCK_PORT,
    SHARE_TAG,
    TCG_CACHE_MIB,
    DomainSpec,
    Share,
    TemplateMemory,
    boot_vcpus,
    domain_name,
    domain_uuid,
    find_virtiofsd,
    kernel_cmdline,
    plugs_vcpus,
    vsock_cid,
)
from vmcri.handlers.vm.grow import HotplugGuard, PodLocks, grow
from vmcri.handlers.vm.guest_image import GuestImage, load_guest_image
from vmcri.handlers.vm.hypervisor import Hypervisor, LibvirtHypervisor, wait_until
from vmcri.handlers.vm.image_volumes import mount_image_volumes
from vmcri.handlers.vm.launcher import QEMU, VIRTIOFSD, launcher_path
from vmcri.handlers.vm.layer_budget import layer_size
from vmcri.handlers.vm.layout import GUEST_SHARE, MAX_SOCKET_PATH, SandboxLayout
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.render import render_domain, render_nic
from vmcri.handlers.vm.sizing import (
    VmSize,
    boot_size,
    plan_growth,
    pod_demand,
    size_vm,
)
from vmcri.handlers.vm.spec import container_spec, pod_files, shares_pid, target_of
from vmcri.handlers.vm.template import Shape, Template, Templates, TemplateStore
from vmcri.handlers.vm.volumes import mount_volumes
from vmcri.host import layer_space
from vmcri.host.mounts import HARDENED, HostMounter, Mounter, mount_points
from vmcri.metrics import families as metrics
from vmcri.model import Resources
from vmcri.network.tap import NetlinkTaps, TapDevices
from vmcri.oci.userns import uses_userns
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord
from vmcri.supervisor.backend_methods import SupervisedContainerMethods
from vmcri.supervisor.containers import KILL_GRACE_S, SupervisedContainers

log = logging.getLogger(__name__)

EXEC_OUTPUT_LIMIT = 480 * 1024  # per stream; both must fit one agent frame
VHOST_VSOCK = "/dev/vhost-vsock"
TEMPLATE_DOMAIN_PREFIX = "vmcritpl-"  # + daemon pid + key: not a pod's "vmcri-" domain
RESTORE_TIMEOUT_S = 30.0  # QEMU loads a few hundred KiB of device state
WARM_UP_TIMEOUT_S = 60.0  # one throwaway container in the template, under emulation
RESTORE_AGENT_TIMEOUT_S = 15.0  # a restored agent answers at once; more means it is broken
NIC_WAIT_S = 10  # a hotplugged NIC shows up in the guest
SAVE_TIMEOUT_S = 60.0
GUEST_9P_OPTIONS = ("msize=262144",)  # as guest/init mounts a cold-booted pod's share
# A restore that fails for one of these cold-boots the pod; anything else (a bad sysctl,
# a pod the host cannot hold) would fail a cold boot the same way.
RESTORE_FAILURES = (HypervisorError, AgentUnavailable, DeadlineExceeded, ProtocolError,
                    FailedPrecondition)  # fmt: skip


def create(options: VmOptions, context: BackendContext) -> VmBackend:
    return VmBackend(options, context)


class VmBackend(SupervisedContainerMethods):
    def __init__(
        self,
        options: VmOptions,
        context: BackendContext,
        hypervisor: Hypervisor | None = None,
        mounter: Mounter | None = None,
        taps: TapDevices | None = None,
        cgroups: PodCgroups | None = None,
    ) -> None:
        self._options = options
        self._context = context
        self._state = context.state
        self._accel: AccelChoice = choose_accel(options.accel, kvm_usable())
        if self._accel.degraded:
            log.warning("vm backend: %s", self._accel.reason)
        self._hypervisor = hypervisor or LibvirtHypervisor(
            options.libvirt_uri, on_death=self._on_domain_death
        )
        # The host runs nothing from a pod's mounts: no setuid binaries or devices through them.
        self._mounter = mounter or HostMounter(HARDENED)
        self._taps = taps or NetlinkTaps()
        self._vhost_net = nic.vhost_usable()
        self._vsock = _use_vsock(options.agent_transport, Path(VHOST_VSOCK))
        self._virtiofsd = find_virtiofsd() if options.shared_fs != "9p" else ""
        if options.shared_fs == "virtiofs" and not self._virtiofsd:
            raise ConfigError(
                "options.shared_fs: 'virtiofs' was asked for but no virtiofsd binary was found"
            )
        if options.template == "auto" and options.shared_fs == "auto":
            self._virtiofsd = ""  # templates need 9p: a virtio-fs device cannot be saved
        self._share_driver = "virtiofs" if self._virtiofsd else "9p"
        self._containers = SupervisedContainers(self, context.services)
        self._grow_locks = PodLocks()
        self._cgroups: PodCgroups = cgroups or VmCgroups(context.config.cgroup_driver, options)
        # Each pod's cgroups from its start on (the record has them once it is READY),
        # and the pods this daemon run has placed (again, after a restart) already.
        self._placements: dict[str, Placement] = {}
        self._placed: set[str] = set()
        self._private_ready = False
        self._hypervisor_version = ""
        self._templates: Templates | None = None
        self._template_blocker = _template_blocker(options, self._vsock, self._share_driver)
        if options.template == "auto" and self._template_blocker:
            log.warning("vm backend: VM templates are off: %s", self._template_blocker)
        elif not self._template_blocker:
            directory = Path(options.template_dir) if options.template_dir else None
            store = TemplateStore(directory or context.root / "templates")
            self._templates = Templates(store, self._build_template)
            self._template_domain = ""  # the template VM being built, destroyed at exit
            atexit.register(self._stop_template_build)
            threading.Thread(
                target=self._prepare_templates, name="vm-templates-init", daemon=True
            ).start()

    # ------------------------------------------------------------ helpers

    def _layout(self, sandbox_id: str) -> SandboxLayout:
        return SandboxLayout(self._state / sandbox_id, self._context.root / sandbox_id)

    def _ensure_private_root(self) -> None:
        # Each pod's mounts propagate to its own share (and the copies of it in the mount
        # namespaces libvirt gives QEMU and virtiofsd) through a peer group of its own; a
        # private parent keeps them from spreading into every other mount namespace.
        if not self._private_ready:
            self._mounter.make_private(self._state)
            self._private_ready = True

    def _prepare_dirs(self, layout: SandboxLayout) -> int:
        """The pod's host-only directories, its share, and its sized writable file system;
        returns that file system's size in MiB (0: none). Raises ResourceExhausted (no
        disk left for it, see layer_budget.py), HostCommandError."""
        for d in (layout.base, layout.exits, layout.disk):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.agent_socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._mounter.share_readonly(layout.mounts, layout.share, layout.mount_namespace)
        if not self._options.writable_layer_mib:
            layout.writable.mkdir(exist_ok=True, mode=0o700)
            return 0
        wanted = self._options.writable_layer_mib
        with layer_space.ALLOCATION:  # until the new layer's file exists, and counts
            space = self._layer_space()
            size = layer_size(space, wanted, self._options.writable_layer_reserve_mib)
            if size < wanted:
                log.warning(
                    "pod writable layer sized down to %d MiB (writable_layer_mib = %d): "
                    "%d MiB free, %d MiB still promised to %d pods' layers, %d MiB reserve",
                    size, wanted, space.free_bytes >> 20, space.claimable_bytes >> 20,
                    space.layers, self._options.writable_layer_reserve_mib,
                )  # fmt: skip
            self._mounter.sized_fs(layout.writable_image, layout.writable, size)
        return size

    def _layer_space(self) -> layer_space.LayerSpace:
        """The pods' layers (every handler's: ``<root>/backends``) against the free disk."""
        try:
            return layer_space.measure(self._context.root.parent)
        except OSError as exc:
            raise HostCommandError(f"disk space under {self._context.root}: {exc}") from exc

    def _release_share(self, sandbox_id: str, layout: SandboxLayout) -> None:
        """Once the pod's file server runs, the host's own copy of the share stops following
        the pod's mounts: the copies in the namespaces libvirt gave QEMU (and virtiofsd)
        still do, so a volume's mounts (a tmpfs in a hostPath) never sit on a node
        directory in the host's namespace, where they would keep it busy (EBUSY). A QEMU in
        the host's own namespace (libvirt's ``namespaces`` off) serves the host's copy,
        which then keeps following."""
        qemu = self._hypervisor.mount_namespace(domain_name(sandbox_id))
        if qemu and qemu != os.readlink("/proc/self/ns/mnt"):
            self._mounter.release_share(layout.share)
        else:
            log.warning(
                "sandbox %s: QEMU runs in the host's mount namespace (or its namespace is "
                "unknown): the host keeps copies of the pod's volume mounts, which keep the "
                "node's directories below a hostPath busy",
                sandbox_id,
            )

    def _pod_namespace(self, layout: SandboxLayout) -> Path | None:
        """The pod's mount namespace, where its volumes are bound; None for a pod made
        before pods had one (its volumes are bound here, as they were)."""
        pin = layout.mount_namespace
        return pin if pin in mount_points(pin) else None

    def _guest(self) -> GuestImage:
        return load_guest_image(self._options.guest_path, uncompressed_kernel=self._accel.degraded)

    def _agent_url(self, sandbox_id: str) -> str:
        if self._vsock:
            return f"vsock://{vsock_cid(sandbox_id)}:{AGENT_VSOCK_PORT}"
        return f"unix://{self._layout(sandbox_id).agent_socket}"

    # ------------------------------------------------------------ Placement (supervisor)

    def agent_url(self, sandbox: SandboxRecord) -> str:
        return sandbox.runtime.get("agent_url") or self._agent_url(sandbox.id)

    def agent_running(self, sandbox_id: str) -> bool:
        return self._alive(domain_name(sandbox_id))

    def down_message(self) -> str:
        return "the pod VM is not running"

    def stall_hint(self, sandbox_id: str) -> str:
        console = _tail(self._layout(sandbox_id).console_log)
        return f"guest console ends with: {console}" if console else ""

    def exits_dir(self, sandbox_id: str) -> Path:
        return self._layout(sandbox_id).exits

    def writable_layer(self, sandbox_id: str, container_id: str) -> Path:
        return self._layout(sandbox_id).upper(container_id) / "upper"

    def _on_domain_death(self, name: str, reason: str) -> None:
        prefix = domain_name("")
        if not name.startswith(prefix):
            return
        sandbox_id = name.removeprefix(prefix)
        layout = self._layout(sandbox_id)
        if not layout.base.is_dir():
            return  # another vm handler's pod: each handler has a state dir of its own
        log.warning("sandbox %s: VM %s %s", sandbox_id, name, reason)
        metrics.vm_died(reason)
        self._containers.agent_lost(sandbox_id, f"the pod VM {reason}")

    # ------------------------------------------------------------ SandboxBackend

    def features(self) -> HandlerFeatures:
        return HandlerFeatures(
            # The host makes every volume bind read-only throughout before attaching it
            # (volumes.py), whatever runtime the guest runs: the new mount API each VM pod
            # needs anyway.
            recursive_read_only_mounts=True,
            user_namespaces=False,
            host_network=False,
            host_pid_ipc=False,
        )

    def conditions(self) -> Sequence[Condition]:
        found: list[Condition] = []
        if self._accel.degraded:
            found.append(
                Condition("VmAcceleration", False, "SoftwareEmulation", self._accel.reason)
            )
        if self._templates is not None:
            found.append(Condition("VmTemplates", *self._templates.summary()))
        elif self._options.template == "auto":
            found.append(Condition("VmTemplates", False, "Unsupported", self._template_blocker))
        return tuple(found)

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        if uses_userns(sandbox.config.security.namespace_options):
            # The guest sees the pod's files through virtiofs/9p, which cannot be ID-mapped.
            raise Unimplemented(
                "config.linux.security_context.namespace_options.userns_options: the vm "
                "handler does not support user namespaces (the VM is the isolation; use NODE)"
            )
        guest = self._guest()
        layout = self._layout(sandbox.id)
        name = domain_name(sandbox.id)
        self._ensure_private_root()
        if len(str(layout.agent_socket)) > MAX_SOCKET_PATH:
            raise FailedPrecondition(
                f"state dir {self._state} is too deep: the agent socket path "
                f"{layout.agent_socket} exceeds {MAX_SOCKET_PATH} bytes"
            )
        if layout.agent_socket.exists():
            raise FailedPrecondition(f"agent socket {layout.agent_socket} is already in use")
        try:
            hostname = pod_files(sandbox)[0]
            memory_mib, vcpus = size_vm([], sandbox.config.resources, self._options)
            _check_overhead(sandbox, self._options)
            limited = _pod_memory_limited(sandbox)
            template = self._template_for(guest, memory_mib, vcpus, limited)
            most = self._boot_size(memory_mib, vcpus, limited).max_memory_mib
            self._placements[sandbox.id] = self._cgroups.prepare(sandbox, most)
            layer_mib = self._prepare_dirs(layout)
            plan = nic.plan_nic(sandbox.id, sandbox.network, self._taps, self._vhost_net)
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
            self._release_share(sandbox.id, layout)
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
        except BaseException as exc:
            log.error("sandbox %s: VM start failed: %s", sandbox.id, exc)
            console = _tail(layout.console_log)
            try:
                self._teardown(sandbox.id, sandbox)
            except VmcriError as cleanup:
                log.error("sandbox %s: clean-up failed: %s", sandbox.id, cleanup.message)
            if isinstance(exc, VmcriError) and console:
                exc.message += f"; guest console ends with: {console}"
                exc.args = (exc.message,)
            raise
        return SandboxStarted(
            runtime={
                "domain": name,
                "agent_url": self._agent_url(sandbox.id),
                "guest_version": guest.version,
                "accel": spec.domain_type,
                **_started_size(spec).runtime(),
                **self._placements[sandbox.id].runtime(),
                "start": "restored" if restored else "cold",
                "oci_runtime": self._options.oci_runtime,
                "writable_layer_mib": str(layer_mib),
                "hostname": hostname,
                "hostname_path": guest_files.hostname_path,
                "hosts_path": guest_files.hosts_path,
                "resolv_conf_path": guest_files.resolv_conf_path,
                **({"pid_ns_path": guest_files.pid_ns_path} if guest_files.pid_ns_path else {}),
            }
        )

    def _alive(self, name: str) -> bool:
        return self._hypervisor.is_running(name)

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
        link = self._containers.link(sandbox)
        info = link.wait_ready(self._options.boot_timeout_s, alive=lambda: self._alive(name))
        _check_guest_version(info.agent_version, guest)
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
        spec = self._templated_spec(
            template.shape,
            guest,
            name=name,
            uuid=domain_uuid(sandbox.id),
            agent_socket=layout.agent_socket,
            console_log=layout.console_log,
            share=layout.share,
            memory=TemplateMemory(str(template.memory), shared=False, incoming=True),
        )
        started = time.monotonic()
        if plan is not None:
            nic.plug(self._taps, plan)
        try:
            self._hypervisor.restore(
                name,
                render_domain(spec),
                template.state,
                layout.incoming_socket,
                RESTORE_TIMEOUT_S,
                self._placer(sandbox.id),
            )
            restored = time.monotonic()
            link = self._containers.link(sandbox)
            info = link.wait_ready(RESTORE_AGENT_TIMEOUT_S, alive=lambda: self._alive(name))
            _check_guest_version(info.agent_version, guest)
        except (HypervisorError, AgentUnavailable, FailedPrecondition) as exc:
            # The template itself failed (its state, its guest): it goes, the pod cold-boots.
            raise TemplateUnusable(f"restore failed: {exc.message}") from exc
        domain_up = time.monotonic()
        if plan is not None:
            self._hypervisor.attach_device(name, render_nic(plan.nic))
            nic.attach(self._taps, plan)
        timings = {
            "restore_s": round(restored - started, 3),
            "domain_start_s": round(domain_up - started, 3),
            "agent_ready_s": round(time.monotonic() - started, 3),
        }
        return spec, info, timings

    def _setup(
        self,
        sandbox: SandboxRecord,
        spec: DomainSpec,
        plan: nic.NicPlan | None,
        restored: bool,
    ) -> agent_types.SandboxFiles:
        """The pod's settings in the guest. A cold-booted guest's init mounted the share
        (kernel command line); a restored one mounts it now, sets the clock the template
        was saved with to now, and waits for its hotplugged NIC."""
        hostname, hosts, resolv = pod_files(sandbox)
        share_pid = shares_pid(sandbox.config)
        files = self._containers.link(sandbox).client.setup_sandbox(
            hostname=hostname,
            hosts=hosts,
            resolv_conf=resolv,
            sysctls=dict(sandbox.config.sysctls),
            interfaces=(plan.guest,) if plan is not None else (),
            mounts=(Mount9p(SHARE_TAG, GUEST_SHARE, GUEST_9P_OPTIONS),) if restored else (),
            wall_clock_ns=time.time_ns() if restored else 0,
            nic_wait_s=NIC_WAIT_S if restored and plan is not None else 0,
            share_pid=share_pid,
        )
        if share_pid and not files.pid_ns_path:
            raise ProtocolError("the guest agent made no PID namespace for the pod")
        return files

    def _placer(self, sandbox_id: str) -> Callable[[int], None]:
        """Moves a starting VM's processes into the pod's cgroup, before the guest runs."""

        def place(qemu_pid: int) -> None:
            placement = self._placements[sandbox_id]
            name = domain_name(sandbox_id)
            self._placements[sandbox_id] = self._cgroups.place(placement, qemu_pid, name)
            self._placed.add(sandbox_id)

        return place

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
        layout.incoming_socket.unlink(missing_ok=True)

    # ------------------------------------------------------------ VM templates (template.py)

    def _shape(
        self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
    ) -> Shape:
        """``pod_limited``: a pod-level memory limit, which the VM boots at and never
        outgrows (no virtio-mem region: a shape of its own)."""
        if not self._hypervisor_version:
            self._hypervisor_version = self._hypervisor.version()
        size = self._boot_size(memory_mib, vcpus, pod_limited)  # clones grow as cold boots do
        shape = Shape(
            guest_version=guest.version,
            hypervisor=self._hypervisor_version,
            domain_type=self._accel.domain_type,
            machine=self._options.machine,
            memory_mib=memory_mib,
            vcpus=vcpus,
            tcg_cache_mib=TCG_CACHE_MIB if self._accel.degraded else 0,
            share_driver=self._share_driver,
            max_vcpus=size.max_vcpus,
            hotplug_memory_mib=size.hotplug_memory_mib,
        )
        # What the saved guest saw: the domain with every per-VM value a placeholder
        # (a change of templates/ or of the device policy makes a new template).
        placeholder = Path("/")
        spec = self._templated_spec(
            shape, guest, name="n", uuid="u", agent_socket=placeholder, console_log=placeholder,
            share=placeholder, memory=TemplateMemory("m", shared=False, incoming=False),
        )  # fmt: skip
        devices = hashlib.sha256(render_domain(spec).encode()).hexdigest()[:16]
        return dataclasses.replace(shape, devices=devices)

    def _template_for(
        self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
    ) -> Template | None:
        """The verified template of the pod's shape; None: cold boot (a build is queued)."""
        if self._templates is None:
            return None
        try:
            return self._templates.get(self._shape(guest, memory_mib, vcpus, pod_limited))
        except HypervisorError as exc:
            log.warning("VM templates: %s", exc.message)
            return None

    def _prepare_templates(self) -> None:
        """At start-up: clear what builds of dead daemons left, then build the template of
        the default shape (a pod with no limits)."""
        assert self._templates is not None
        try:
            for name in self._hypervisor.names(TEMPLATE_DOMAIN_PREFIX):
                pid = name.removeprefix(TEMPLATE_DOMAIN_PREFIX).split("-", 1)[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    log.info("VM templates: destroying %s, left by a dead daemon", name)
                    self._hypervisor.destroy(name)
            guest = self._guest()
            self._templates.store.sweep(
                lambda shape: (
                    shape
                    in (
                        self._shape(guest, shape.memory_mib, shape.vcpus),
                        self._shape(guest, shape.memory_mib, shape.vcpus, pod_limited=True),
                    )
                )
            )
            memory_mib, vcpus = size_vm([], Resources(), self._options)
            self._template_for(guest, memory_mib, vcpus)
        except (VmcriError, OSError) as exc:
            log.warning("VM templates: cannot prepare the default template: %s", exc)

    def _stop_template_build(self) -> None:
        """At exit: a template VM still booting would outlive the daemon."""
        if self._template_domain:
            with contextlib.suppress(VmcriError):
                self._hypervisor.destroy(self._template_domain)

    def _templated_spec(
        self,
        shape: Shape,
        guest: GuestImage,
        *,
        name: str,
        uuid: str,
        agent_socket: Path,
        console_log: Path,
        share: Path,
        memory: TemplateMemory,
    ) -> DomainSpec:
        """The domain of a template or of a clone: the same devices, host-side paths apart."""
        return DomainSpec(
            name=name,
            uuid=uuid,
            domain_type=shape.domain_type,
            machine=shape.machine,
            memory_mib=shape.memory_mib,
            vcpus=shape.vcpus,
            max_vcpus=shape.max_vcpus,
            hotplug_memory_mib=shape.hotplug_memory_mib,
            kernel=str(guest.kernel),
            initrd=str(guest.initrd),
            cmdline=kernel_cmdline(
                False,
                GUEST_SHARE,
                template=True,
                oci_runtime=self._options.oci_runtime,
                memory_hotplug=shape.hotplug_memory_mib > 0,
                boot_vcpus=boot_vcpus(shape.domain_type, shape.vcpus, shape.max_vcpus),
            ),
            root_image=str(guest.root_image),
            agent_socket=str(agent_socket),
            agent_port_name=AGENT_PORT_NAME,
            agent_vsock_cid=0,
            console_log=str(console_log),
            shares=(Share(SHARE_TAG, str(share), False, shape.share_driver),),
            run_as_root=shape.share_driver == "9p",
            emulator=launcher_path(QEMU),
            tcg_cache_mib=shape.tcg_cache_mib,
            template_memory=memory,
        )

    def _build_template(self, shape: Shape, staging: Path) -> None:
        """Boot a template VM of ``shape`` with its RAM in ``staging/memory``, wait for its
        agent, save its device state to ``staging/state``; nothing is left running.

        Raises HypervisorError, AgentUnavailable, FailedPrecondition (agent of another image).
        """
        guest = self._guest()
        if guest.version != shape.guest_version:
            raise FailedPrecondition(f"the guest image is now {guest.version[:12]}")
        tag = f"{os.getpid()}-{shape.key()[:8]}"
        name = f"{TEMPLATE_DOMAIN_PREFIX}{tag}"
        sockets = staging  # the build's sockets go with it, unless the path is too long
        if len(str(staging / f"tpl-{tag}.agent")) > MAX_SOCKET_PATH:  # .save: as long
            sockets = self._state / "sockets"
            sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        agent_socket = sockets / f"tpl-{tag}.agent"
        share = staging / "share"  # empty, never mounted by the template's guest
        share.mkdir()
        spec = self._templated_spec(
            shape,
            guest,
            name=name,
            uuid=str(uuid_module.uuid4()),
            agent_socket=agent_socket,
            console_log=staging / "console.log",
            share=share,
            memory=TemplateMemory(str(staging / "memory"), shared=True, incoming=False),
        )
        client = AgentClient(
            f"unix://{agent_socket}", connect_timeout=2.0, call_timeout=30.0, reconnect=False
        )
        try:
            self._template_domain = name
            self._hypervisor.start(name, render_domain(spec))
            deadline = time.monotonic() + self._options.boot_timeout_s
            while True:
                if not self._alive(name):
                    raise HypervisorError(f"template VM {name} stopped while booting")
                try:
                    info = client.ping()
                    break
                except (AgentUnavailable, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise AgentUnavailable(f"template VM {name}: no agent ({exc})") from exc
                    time.sleep(0.2)
            _check_guest_version(info.agent_version, guest)
            try:
                client.warm_up(timeout=WARM_UP_TIMEOUT_S)
            except VmcriError as exc:
                # Pods restored from it load these themselves; their containers would fail
                # the same way in a cold-booted pod, with the error where it belongs.
                log.warning("VM template %s: warm-up failed: %s", shape.label(), exc.message)
            client.close()  # the template's agent waits for a next connection: a pod's
            self._hypervisor.save_state(
                name, staging / "state", sockets / f"tpl-{tag}.save", SAVE_TIMEOUT_S
            )
        finally:
            client.close()
            self._hypervisor.destroy(name)
            self._template_domain = ""
            agent_socket.unlink(missing_ok=True)
        (staging / "console.log").unlink(missing_ok=True)
        share.rmdir()

    def _domain_spec(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        guest: GuestImage,
        plan: nic.NicPlan | None = None,
    ) -> DomainSpec:
        memory_mib, vcpus = size_vm([], sandbox.config.resources, self._options)
        size = self._boot_size(memory_mib, vcpus, _pod_memory_limited(sandbox))
        return DomainSpec(
            name=domain_name(sandbox.id),
            uuid=domain_uuid(sandbox.id),
            domain_type=self._accel.domain_type,
            machine=self._options.machine,
            memory_mib=memory_mib,
            vcpus=vcpus,
            max_vcpus=size.max_vcpus,
            hotplug_memory_mib=size.hotplug_memory_mib,
            kernel=str(guest.kernel),
            initrd=str(guest.initrd),
            cmdline=kernel_cmdline(
                log.isEnabledFor(logging.DEBUG),
                GUEST_SHARE,
                vsock=self._vsock,
                share_driver=self._share_driver,
                oci_runtime=self._options.oci_runtime,
                memory_hotplug=size.hotplug_memory_mib > 0,
                boot_vcpus=boot_vcpus(self._accel.domain_type, vcpus, size.max_vcpus),
            ),
            root_image=str(guest.root_image),
            agent_socket=str(layout.agent_socket),
            agent_port_name=AGENT_PORT_NAME,
            agent_vsock_cid=vsock_cid(sandbox.id) if self._vsock else 0,
            console_log=str(layout.console_log),
            shares=(Share(SHARE_TAG, str(layout.share), False, self._share_driver),),
            run_as_root=self._share_driver == "9p",
            virtiofsd=launcher_path(VIRTIOFSD) if self._virtiofsd else "",
            emulator=launcher_path(QEMU),
            tcg_cache_mib=TCG_CACHE_MIB if self._accel.degraded else 0,
            nic=plan.nic if plan is not None else None,
        )

    def stop_sandbox(self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]) -> None:
        name = domain_name(sandbox.id)
        if self._alive(name):
            self._containers.kill_remaining(sandbox, containers, KILL_GRACE_S)
            try:
                self._containers.link(sandbox).client.shutdown()
            except VmcriError:
                self._hypervisor.shutdown(name)
            if not wait_until(lambda: not self._alive(name), self._options.shutdown_timeout_s):
                log.warning("sandbox %s: VM did not power off; destroying it", sandbox.id)
                self._hypervisor.destroy(name)
        self._containers.agent_lost(sandbox.id, "the pod sandbox was stopped")

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        self._teardown(sandbox.id, sandbox)

    def _teardown(self, sandbox_id: str, sandbox: SandboxRecord | None = None) -> None:
        """Destroy the VM and release every mount and file of the sandbox; idempotent."""
        self._containers.forget(sandbox_id)
        self._grow_locks.forget(sandbox_id)
        name = domain_name(sandbox_id)
        try:
            self._hypervisor.destroy(name)
        except HypervisorError as exc:
            log.error("sandbox %s: destroy failed: %s", sandbox_id, exc.message)
        try:
            nic.unplug(self._taps, sandbox_id, sandbox.network if sandbox is not None else None)
        except VmcriError as exc:
            log.error("sandbox %s: NIC removal failed: %s", sandbox_id, exc.message)
        layout = self._layout(sandbox_id)
        # Raises (and deletes nothing) while anything is still mounted: never delete through
        # a mount, a volume's files least of all. The pod's namespace first: its pin goes
        # with the rest below base.
        namespace = self._pod_namespace(layout)
        if namespace is not None:
            self._mounter.unmount_below(layout.mounts, namespace)
        self._mounter.unmount_below(layout.base)
        self._mounter.unmount_below(layout.disk)
        # rmtree works through directory fds and never follows the guest's symlinks.
        shutil.rmtree(layout.base, ignore_errors=True)
        shutil.rmtree(layout.disk, ignore_errors=True)
        layout.agent_socket.unlink(missing_ok=True)
        layout.incoming_socket.unlink(missing_ok=True)
        self._remove_cgroups(sandbox_id, sandbox)

    def _remove_cgroups(self, sandbox_id: str, sandbox: SandboxRecord | None) -> None:
        """After the VM is gone: its leaf, and the pod's cgroup if vmcri made it. libvirt
        ends QEMU and virtiofsd before destroy returns; their exit may take a moment."""
        placement = self._placements.pop(sandbox_id, None)
        self._placed.discard(sandbox_id)
        if placement is None and sandbox is not None:
            placement = Placement.from_runtime(sandbox.runtime)
        if placement is not None and not wait_until(
            lambda: self._cgroups.remove(placement), 5.0, 0.05
        ):
            log.warning("sandbox %s: cgroup %s is still in use", sandbox_id, placement.leaf)

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        alive = self._alive(domain_name(sandbox.id))
        if alive:
            self._containers.reconnect(sandbox)  # after a restart: the events flow again
            if sandbox.id not in self._placed:
                self._reconcile_cgroups(sandbox)
        return alive

    def _reconcile_cgroups(self, sandbox: SandboxRecord) -> None:
        """Once per daemon run: a VM that runs (a restart found it) is placed again, in
        case a growth ended with its threads where libvirt put them."""
        placement = Placement.from_runtime(sandbox.runtime)
        self._placed.add(sandbox.id)
        if placement is None:
            return  # a pod from before VM pods had cgroups
        name = domain_name(sandbox.id)
        try:
            placed = self._cgroups.place(placement, self._hypervisor.qemu_pid(name), name)
        except VmcriError as exc:
            log.warning("sandbox %s: cannot place its VM in %s: %s", sandbox.id, placement.leaf,
                        exc.message)  # fmt: skip
            return
        self._placements[sandbox.id] = placed

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        layout = self._layout(sandbox.id)
        cid = container.id
        if not image.layer_dirs:
            raise FailedPrecondition(f"image {image.name}: has no unpacked layers")
        self._make_room(sandbox, "config.linux.resources", container)
        try:
            rootfs = layout.rootfs(cid)
            upper = layout.upper(cid)
            self._mounter.overlay(image.layer_dirs, upper / "upper", upper / "work", rootfs)
            container, views = mount_image_volumes(self._mounter, layout, container)
            volumes = mount_volumes(self._mounter, layout, container, self._pod_namespace(layout))
            target = target_of(container)
            spec = container_spec(
                sandbox,
                container,
                image,
                str(rootfs),
                layout.guest_path(rootfs),
                volumes,
                views,
                target_pid=self._containers.pid(sandbox, target) if target else 0,
            )
            self._containers.create(sandbox, container, spec, layout.guest_path(rootfs))
        except BaseException:
            self._release_container(sandbox, cid)
            raise
        return {"rootfs": str(rootfs)}

    def _release_container(self, sandbox: SandboxRecord, container_id: str) -> None:
        layout = self._layout(sandbox.id)
        namespace = self._pod_namespace(layout)
        if namespace is not None:
            self._mounter.unmount_below(layout.container_mounts(container_id), namespace)
        self._mounter.unmount_below(layout.container_mounts(container_id))
        shutil.rmtree(layout.container_mounts(container_id), ignore_errors=True)
        shutil.rmtree(layout.upper(container_id), ignore_errors=True)

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        self._containers.remove(sandbox, container)
        self._release_container(sandbox, container.id)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        from vmcri.oci.resources import linux_resources

        self._make_room(sandbox, "linux", container, resources)
        self._containers.update_resources(sandbox, container, linux_resources(resources))

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        self._make_room(sandbox, "resources", pod=resources)

    def _boot_size(self, memory_mib: int, vcpus: int, pod_limited: bool = False) -> VmSize:
        hotplug = plugs_vcpus(self._accel.domain_type)
        return boot_size(
            memory_mib, vcpus, self._options, hotplug_vcpus=hotplug, pod_memory_limit=pod_limited
        )

    def _make_room(
        self,
        sandbox: SandboxRecord,
        field: str,
        container: ContainerRecord | None = None,
        resources: Resources | None = None,
        pod: Resources | None = None,
    ) -> None:
        """Grow the pod's VM until the pod's limits fit, with ``container`` at ``resources``
        (or the pod's own limits at ``pod``), before the container or the pod gets them.

        Raises InvalidArgument naming ``field`` (more than the VM can grow to; nothing
        changed), ResourceExhausted (the guest did not take what was hotplugged; the VM is
        as it was), HypervisorError, the agent's errors.
        """
        with self._grow_locks.hold(sandbox.id):
            services = self._context.services
            current = services.find_sandbox(sandbox.id) or sandbox  # after an earlier growth
            size = VmSize.from_runtime(current.runtime)
            if size is None:
                return  # a record from before the VM's size was kept
            limits = [
                c.config.resources
                for c in services.containers_of(sandbox.id)
                if c.state is not ContainerState.EXITED
                and (container is None or c.id != container.id)
            ]
            if container is not None:
                limits.append(container.config.resources if resources is None else resources)
            demand = pod_demand(current.config.resources if pod is None else pod, limits)
            target = plan_growth(
                size, demand, self._options, field, plugs_vcpus(self._accel.domain_type)
            )
            if target == size:
                return
            name = domain_name(sandbox.id)
            if not self._alive(name):
                raise FailedPrecondition(f"sandbox {sandbox.id}: {self.down_message()}")
            guest = self._containers.link(current).client
            plug = plugs_vcpus(self._accel.domain_type)
            grow(
                self._hypervisor, guest, name, size, target, plug_vcpus=plug,
                hotplug_guard=self._hotplug_guard(current),
            )  # fmt: skip
            services.update_sandbox_runtime(sandbox.id, target.runtime())

    def _hotplug_guard(self, sandbox: SandboxRecord) -> HotplugGuard:
        """QEMU in libvirt's cgroup2 group while libvirt plugs a vCPU, then placed again."""
        placement = self._placements.get(sandbox.id) or Placement.from_runtime(sandbox.runtime)
        if placement is None:
            return contextlib.nullcontext
        name = domain_name(sandbox.id)

        def guard() -> contextlib.AbstractContextManager[None]:
            return self._cgroups.hotplug(placement, self._hypervisor.qemu_pid(name), name)

        return guard

    # ------------------------------------------------------------ streaming

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Raises FailedPrecondition (VM down), Unavailable (nothing listens on the port)."""
        return self._containers.port_connection(sandbox, port)


def _started_size(spec: DomainSpec) -> VmSize:
    """The size of a VM just started from ``spec`` (cold or restored), and its maxima."""
    return VmSize(
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        boot_memory_mib=spec.memory_mib,
        max_memory_mib=spec.memory_mib + spec.hotplug_memory_mib,
        max_vcpus=spec.vcpu_max,
    )


def _pod_memory_limited(sandbox: SandboxRecord) -> bool:
    """kubelet sent a pod-level memory limit: the VM boots at it and never outgrows it."""
    return sandbox.config.resources.memory_limit_in_bytes > 0


def _check_overhead(sandbox: SandboxRecord, options: VmOptions) -> None:
    """kubelet's overhead (the RuntimeClass's podFixed) is what the node sets aside for the
    pod beyond its containers: the guest's own share and QEMU. It does not size the VM
    (ARCHITECTURE.md, "VM sizing"); one that is smaller than the guest's share alone means
    the node counts less than the pod uses, which is worth a warning."""
    overhead = sandbox.config.overhead
    if 0 < overhead.memory_limit_in_bytes < options.overhead_memory_mib * (1 << 20):
        log.warning(
            "sandbox %s: the pod overhead kubelet sent (%d MiB, the RuntimeClass's "
            "podFixed) is less than the VM's own %d MiB (overhead_memory_mib), before QEMU's",
            sandbox.id,
            overhead.memory_limit_in_bytes >> 20,
            options.overhead_memory_mib,
        )


def _template_blocker(options: VmOptions, vsock: bool, share_driver: str) -> str:
    """Why this backend cannot use VM templates, or "" when it can."""
    if options.template == "off":
        return "options.template is off"
    if vsock:
        return "the agent uses vsock (its CID is fixed in a saved guest)"
    if share_driver != "9p":
        return "options.shared_fs is virtiofs (a vhost-user-fs device cannot be saved)"
    return ""


def _use_vsock(setting: str, device: Path) -> bool:
    """vsock where the host has vhost-vsock (or when forced), else virtio-serial."""
    if setting == "auto":
        return device.exists()
    return setting == "vsock"


def _check_guest_version(agent_version: str, guest: GuestImage) -> None:
    """The agent must come from the image we booted; raises FailedPrecondition."""
    _, _, image = agent_version.partition("+")
    if image != guest.version[:12]:
        raise FailedPrecondition(
            f"the guest agent reports image {image or 'unknown'!r} but {guest.version[:12]!r} "
            "was booted; rebuild the guest image (scripts/build-guest-image.sh)"
        )


def _tail(path: Path, limit: int = 600) -> str:
    """The end of the guest's console log (the guest chose every byte: read only the end)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    # Terminal escapes and other controls would reach logs and kubelet's events: dropped
    text = " | ".join("".join(c for c in line if c.isprintable()).strip() for line in lines)
    return text.strip(" |")[-limit:]
