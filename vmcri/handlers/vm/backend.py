"""The ``vm`` backend: one QEMU/KVM virtual machine per pod sandbox.

A sandbox is a transient libvirt domain booted straight into our kernel and
initrd; its agent (``vmcri agent``) answers on a virtio-serial port. Container
root filesystems never cross a file server: each image layer reaches the guest
as a read-only erofs disk and the pod's writable file system as one more disk
(``disks.py``); the agent stacks them into an overlay in the guest and runs the
container on it with runc. Only kubelet's volumes reach the guest through the
pod's share (see ``layout.py``). Output and exits come back as agent events:
the host writes the CRI log files kubelet reads, and an exit file per
container so a daemon restart loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmcri.errors import (
    ConfigError,
    FailedPrecondition,
    HypervisorError,
    VmcriError,
)
from vmcri.handlers.base import HandlerFeatures, SandboxBackend, SandboxStarted
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm import nic
from vmcri.handlers.vm.accel import AccelChoice, choose_accel, kvm_usable
from vmcri.handlers.vm.boot import VmBoot, pod_memory_limited, started_size
from vmcri.handlers.vm.cgroup import Placement, PodCgroups, VmCgroups
from vmcri.handlers.vm.disks import PodDisks
from vmcri.handlers.vm.domain import (
    AGENT_VSOCK_PORT,
    domain_name,
    find_virtiofsd,
    vsock_cid,
)
from vmcri.handlers.vm.grow import PodLocks
from vmcri.handlers.vm.growth import VmGrowth
from vmcri.handlers.vm.guest_image import GuestImage, load_guest_image
from vmcri.handlers.vm.host_cpu import host_cpu
from vmcri.handlers.vm.hypervisor import Hypervisor, LibvirtHypervisor, wait_until
from vmcri.handlers.vm.image_volumes import mount_image_volumes
from vmcri.handlers.vm.layout import (
    GUEST_ROOTFS,
    GUEST_SHARE_MOUNT,
    MAX_SOCKET_PATH,
    SandboxLayout,
)
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.placement import VmPlacement
from vmcri.handlers.vm.pod_dirs import VmPodDirs
from vmcri.handlers.vm.pod_volumes import VmPodVolumes
from vmcri.handlers.vm.pool_vms import VmPoolVms
from vmcri.handlers.vm.saved_vm import COLD, TEMPLATE, WRITABLE, SavedPod, SavedVm
from vmcri.handlers.vm.sizing import VmSize, check_overhead, size_vm
from vmcri.handlers.vm.spec import container_spec, pod_files, target_of
from vmcri.handlers.vm.template_vms import VmTemplateVms
from vmcri.handlers.vm.volumes import check_userns_volumes, mount_volumes
from vmcri.host.mounts import HARDENED, HostMounter, Mounter
from vmcri.images.layer_erofs import layer_image
from vmcri.metrics import families as metrics
from vmcri.model import Condition, ImageInfo, Mount, Resources
from vmcri.network.tap import NetlinkTaps, TapDevices
from vmcri.oci.spec import Spec
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import PortConnection
from vmcri.supervisor.containers import SupervisedContainers

log = logging.getLogger(__name__)

VHOST_VSOCK = "/dev/vhost-vsock"


def create(options: VmOptions, context: BackendContext) -> SandboxBackend:
    """Factory named in :data:`vmcri.handlers.registry.BACKENDS` (mypy holds the backend to
    the Protocol here)."""
    return VmBackend(options, context)


class VmBackend(VmBoot, VmTemplateVms, VmPoolVms, VmGrowth, VmPlacement, VmPodDirs, VmPodVolumes):
    """The ``SandboxBackend`` of VM pods. Its other parts, each in a module of its own:
    booting (``boot.py``), VM templates (``template_vms.py``), the pool of restored VMs
    (``pool_vms.py``), growth (``growth.py``), the pods' cgroups (``placement.py``),
    host-side directories (``pod_dirs.py``) and the volumes that live in the guest
    (``pod_volumes.py``)."""

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
        self._disks = PodDisks(self._hypervisor)
        self._cgroups: PodCgroups = cgroups or VmCgroups(context.config.cgroup_driver, options)
        self._placements: dict[str, Placement] = {}  # see placement.py
        self._placed: set[str] = set()
        self._private_ready = False
        self._init_templates(context)
        self._init_pool()

    # ------------------------------------------------------------ helpers

    def _guest(self) -> GuestImage:
        return load_guest_image(self._options.guest_path, uncompressed_kernel=self._accel.degraded)

    def _agent_url(self, sandbox_id: str) -> str:
        if self._vsock:
            return f"vsock://{vsock_cid(sandbox_id)}:{AGENT_VSOCK_PORT}"
        return f"unix://{self._layout(sandbox_id).agent_socket}"

    # ------------------------------------------------------------ Placement (supervisor)

    @property
    def supervisor(self) -> SupervisedContainers:
        """The pod's containers, run by its agent in the VM."""
        return self._containers

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
        if self._pool_lost(sandbox_id):
            return  # an idle pool VM: discarded, and the pool refills
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
            # The guest ID-maps the layers and its own volumes (agent/guest/idmap.py).
            user_namespaces=True,
            host_network=False,
            host_pid_ipc=False,
            in_guest=True,
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
        return self._start(sandbox, None)

    def restore_saved(self, sandbox: SandboxRecord, saved: SavedPod) -> SandboxStarted:
        """Start the pod's VM from a checkpoint (``boot.py``'s ``_boot_saved``) instead of
        a template or a cold boot; everything else as ``run_sandbox``, undone the same
        way on failure."""
        return self._start(sandbox, saved)

    def _start(self, sandbox: SandboxRecord, saved: SavedPod | None) -> SandboxStarted:
        try:
            return self._start_vm(sandbox, saved)
        finally:
            self._pool_end(sandbox.id)

    def _start_vm(self, sandbox: SandboxRecord, saved: SavedPod | None) -> SandboxStarted:
        guest = self._guest()
        layout = self._layout(sandbox.id)
        name = domain_name(sandbox.id)
        self._ensure_private_root()
        if len(str(layout.agent_socket)) > MAX_SOCKET_PATH:
            raise FailedPrecondition(
                f"state dir {self._state} is too deep: the agent socket path "
                f"{layout.agent_socket} exceeds {MAX_SOCKET_PATH} bytes"
            )
        # The pool VM made under this pod's ID (pool_vms.py), now the pod's; from here on a
        # failure tears it down with the rest.
        pooled = self._pool_take(sandbox.id, usable=saved is None)
        if layout.agent_socket.exists() and pooled is None:
            raise FailedPrecondition(f"agent socket {layout.agent_socket} is already in use")
        try:
            hostname = pod_files(sandbox)[0]
            memory_mib, vcpus = size_vm([], sandbox.config.resources, self._options)
            check_overhead(sandbox, self._options)
            limited = pod_memory_limited(sandbox)
            booted = self._boot_size(memory_mib, vcpus, limited)
            if saved is None:
                template = self._template_for(guest, memory_mib, vcpus, limited)
            else:
                self._check_saved_shape(saved.vm, guest, memory_mib, vcpus, limited)
                grown = saved.vm.grown(booted)  # checked before anything is made
            most = booted.max_memory_mib
            self._placements[sandbox.id] = self._cgroups.prepare(sandbox, most)
            plan = nic.plan_nic(sandbox.id, sandbox.network, self._taps, self._vhost_net)
            adopted = self._adopt_pooled(sandbox, layout, plan, pooled) if pooled else None
            if adopted is not None:
                spec, guest_files, layer_mib = adopted
            elif saved is None:
                layer_mib = self._prepare_dirs(layout)
                spec, guest_files = self._boot(sandbox, layout, guest, plan, template)
            else:
                layer_mib = self._prepare_dirs(layout)
                hardware = self._hardware(memory_mib, vcpus, limited)
                spec, guest_files = self._boot_saved(sandbox, layout, guest, plan, hardware, saved)
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
                **(grown if saved else started_size(spec)).runtime(),
                **self._placements[sandbox.id].runtime(),
                "start": "checkpoint"
                if saved is not None
                else "pooled"
                if adopted is not None
                else "restored"
                if spec.template_memory is not None
                else "cold",
                "oci_runtime": self._options.oci_runtime,
                "writable_layer_mib": str(layer_mib),
                "hostname": hostname,
                "hostname_path": guest_files.hostname_path,
                "hosts_path": guest_files.hosts_path,
                "resolv_conf_path": guest_files.resolv_conf_path,
                **({"pid_ns_path": guest_files.pid_ns_path} if guest_files.pid_ns_path else {}),
            }
        )

    @property
    def share_driver(self) -> str:
        """ "9p" or "virtiofs": how this backend's pods get their volumes."""
        return self._share_driver

    def saved_machine(self, sandbox: SandboxRecord) -> SavedVm:
        """What a checkpoint of the running pod must record of its VM (``saved_vm.py``).
        Raises HypervisorError, FailedPrecondition (no guest image)."""
        memory_mib, vcpus = size_vm([], sandbox.config.resources, self._options)
        shape = self._saved_shape(self._guest(), memory_mib, vcpus, pod_memory_limited(sandbox))
        layout = self._layout(sandbox.id)
        disks = {
            lun: WRITABLE if Path(path) == layout.writable_image else Path(path).parent.name
            for path, lun in self._hypervisor.disks(domain_name(sandbox.id)).items()
        }
        plan = nic.plan_nic(sandbox.id, sandbox.network, self._taps, self._vhost_net)
        # Restored from a template or from a checkpoint: either way a template clone's design.
        machine = COLD if sandbox.runtime.get("start") == "cold" else TEMPLATE
        cpu = host_cpu() if shape.get("domain_type") == "kvm" else ""
        size = VmSize.from_runtime(sandbox.runtime)
        now = (size.memory_mib, size.vcpus) if size is not None else (memory_mib, vcpus)
        return SavedVm(machine, shape, disks, plan.nic.mac if plan else "", cpu, *now)

    def adopt_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """A container the restored guest runs already (under the checkpoint's ID): its
        output goes to its new log from now on; returns its pid in the guest. Raises
        NotFound (the guest does not have it), the agent's errors."""
        pid = self._containers.adopt(sandbox, container)
        self._watch_adopted(sandbox, container)
        return pid

    def _alive(self, name: str) -> bool:
        return self._hypervisor.is_running(name)

    def stop_sandbox(self, sandbox: SandboxRecord) -> None:
        """Power the VM off (the container service has killed its containers and waited);
        whatever still ran in it has ended, with exit 137."""
        name = domain_name(sandbox.id)
        if self._alive(name):
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
        self._forget_volumes(sandbox_id)
        name = domain_name(sandbox_id)
        self._disks.forget(name)
        try:
            self._hypervisor.destroy(name)
        except HypervisorError as exc:
            log.error("sandbox %s: destroy failed: %s", sandbox_id, exc.message)
        try:
            nic.unplug(self._taps, sandbox_id, sandbox.network if sandbox is not None else None)
        except VmcriError as exc:
            log.error("sandbox %s: NIC removal failed: %s", sandbox_id, exc.message)
        self._remove_dirs(self._layout(sandbox_id))
        self._remove_cgroups(sandbox_id, sandbox)

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        alive = self._alive(domain_name(sandbox.id))
        if alive:
            self._containers.reconnect(sandbox)  # after a restart: the events flow again
            self._watch_again(sandbox)
            if sandbox.id not in self._placed:
                self._reconcile_cgroups(sandbox)
        return alive

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        layout = self._layout(sandbox.id)
        cid = container.id
        if not image.layer_dirs:
            raise FailedPrecondition(f"image {image.name}: has no unpacked layers")
        self._make_room(sandbox, "config.linux.resources", container)
        try:
            # Uppermost first, as overlayfs stacks lowerdirs; each layer's erofs is built
            # once (the first VM pod to use it waits for it) and kept with the layer.
            disks = [layer_image(Path(d)) for d in reversed(image.layer_dirs)]
            container, views = mount_image_volumes(self._mounter, layout, container)
            in_guest = self._place_in_guest(sandbox, container)
            check_userns_volumes(sandbox, container, in_guest)
            shared = mount_volumes(
                self._mounter, layout, container, self._pod_namespace(layout), skip=in_guest
            )
            volumes = {**shared, **in_guest}
            target = target_of(container)
            spec = self._spec_over_layers(
                layout, sandbox, container, image, volumes, views,
                self._containers.pid(sandbox, target) if target else 0,
            )  # fmt: skip
            if shared or views:
                self._mount_share(sandbox)
            luns = self._disks.attach_layers(domain_name(sandbox.id), disks, layout.layer_links)
            self._containers.create(sandbox, container, spec, layer_luns=luns)
        except BaseException:
            self._release_container(sandbox, cid)
            raise
        return {"rootfs": GUEST_ROOTFS}

    def _mount_share(self, sandbox: SandboxRecord) -> None:
        """The pod's 9p share in the guest, once (a virtio-fs one was mounted at boot).
        Until a container has a volume on the share (``guest_volumes.py`` says which do
        not), the guest mounts none, so QEMU can save the VM."""
        if self._share_driver == "9p":
            self._containers.link(sandbox).client.mount_shares((GUEST_SHARE_MOUNT,))

    def _spec_over_layers(
        self,
        layout: SandboxLayout,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        image: ImageInfo,
        volumes: Mapping[int, Mount],
        views: Mapping[str, str],
        target_pid: int,
    ) -> Spec:
        """The container's spec; the user it names is looked up in the image's own
        /etc/passwd and /etc/group, read through a read-only view of the layers mounted
        for the while in a host-only directory (layers the host unpacked: never a file
        the guest wrote)."""
        view = layout.user_view(container.id)
        try:
            self._mounter.readonly_view(image.layer_dirs, view)
            return container_spec(
                sandbox, container, image, str(view), GUEST_ROOTFS, volumes, views,
                target_pid=target_pid,
            )  # fmt: skip
        finally:
            self._mounter.unmount_below(view)
            with contextlib.suppress(OSError):
                view.rmdir()

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

    # ------------------------------------------------------------ streaming

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Raises FailedPrecondition (VM down), Unavailable (nothing listens on the port)."""
        return self._containers.port_connection(sandbox, port)


def _use_vsock(setting: str, device: Path) -> bool:
    """vsock where the host has vhost-vsock (or when forced), else virtio-serial."""
    if setting == "auto":
        return device.exists()
    return setting == "vsock"


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
