"""The backend's pool VMs: made ahead of their pods, taken over by them, or destroyed.

``VmPoolVms`` is the part of ``VmBackend`` (backend.py) that knows what a pool VM is
(``pool.py`` keeps the pool): a template clone restored under a fresh sandbox ID, exactly
as a pod of that ID would be (its directories, its writable disk, its sockets, its domain
``vmcri-<id>``), checked (its agent answers, of the guest image booted) and paused, in a
cgroup of its own at the least CPU weight (``<cgroup_parent>/<id>``, limited as a pod
cgroup vmcri makes). A pod that gets this ID (``new_sandbox_id``) takes it over in
``run_sandbox``: QEMU with all its threads moves into the pod's cgroup, the NIC is
hotplugged, the VM resumes, and SetupSandbox gives it the pod's hostname, addresses,
clock and fresh entropy from the host. Nothing of the VM is renamed or copied: it was
made in the pod's own places.

``pool.json`` in the VM's disk dir marks it as the pool's until a pod takes it (removed
first thing then): a daemon that starts finds the VMs a previous run left in the pool by
it and destroys them with everything they hold (domain, dirs, sockets, cgroup).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmcri.agent import types as agent_types
from vmcri.errors import HostCommandError, TemplateUnusable, VmcriError
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm import nic
from vmcri.handlers.vm.boot import RESTORE_FAILURES
from vmcri.handlers.vm.cgroup import Placement, PodCgroups
from vmcri.handlers.vm.disks import PodDisks
from vmcri.handlers.vm.domain import DomainSpec, domain_name
from vmcri.handlers.vm.guest_image import GuestImage
from vmcri.handlers.vm.hypervisor import Hypervisor, wait_until
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.pool import PoolHooks, PoolVm, VmPool
from vmcri.handlers.vm.render import render_nic
from vmcri.handlers.vm.sizing import VmSize, size_vm
from vmcri.handlers.vm.template import Template, Templates
from vmcri.ids import new_id
from vmcri.model import Metadata, PodConfig
from vmcri.network.tap import TapDevices
from vmcri.oci.userns import uses_userns
from vmcri.store.records import SandboxRecord
from vmcri.supervisor.containers import SupervisedContainers

if TYPE_CHECKING:
    from vmcri.handlers.vm.template import Shape

log = logging.getLogger(__name__)

POOL_FILE = "pool.json"  # in <root>/backends/<handler>/<id>/ while the VM is the pool's
_SANDBOX_ID_LENGTH = 64


@dataclass(frozen=True)
class PoolHandle:
    """What adopting a pool VM needs of its making."""

    spec: DomainSpec
    placement: Placement
    layer_mib: int


@dataclass(frozen=True)
class PooledVm:
    """Idle pool VMs of one handler as its files say (doctor and metrics read them)."""

    sandbox_id: str
    memory_mib: int
    placement: Placement | None  # its cgroup (None: killed before it had one)
    idle: bool  # made, paused, waiting for a pod (else: being made)


class VmPoolVms:
    """Pool VMs; a part of ``VmBackend``, which sets what is declared here."""

    _options: VmOptions
    _context: BackendContext
    _hypervisor: Hypervisor
    _taps: TapDevices
    _containers: SupervisedContainers
    _disks: PodDisks
    _templates: Templates | None
    _cgroups: PodCgroups
    _placements: dict[str, Placement]
    _placed: set[str]
    _pool: VmPool | None
    _pool_shapes: dict[str, tuple[int, int, bool]]
    _pool_making: str  # the pool VM being made (its sandbox ID)

    if TYPE_CHECKING:

        def _guest(self) -> GuestImage: ...

        def _layout(self, sandbox_id: str) -> SandboxLayout: ...

        def _shape(
            self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
        ) -> Shape: ...

        def _template_for(
            self, guest: GuestImage, memory_mib: int, vcpus: int, pod_limited: bool = False
        ) -> Template | None: ...

        def _boot_size(self, memory_mib: int, vcpus: int, pod_limited: bool = False) -> VmSize: ...

        def _ensure_private_root(self) -> None: ...

        def _prepare_dirs(self, layout: SandboxLayout) -> int: ...

        def _remove_dirs(self, layout: SandboxLayout) -> None: ...

        def _restore(
            self,
            sandbox: SandboxRecord,
            layout: SandboxLayout,
            guest: GuestImage,
            plan: nic.NicPlan | None,
            template: Template,
        ) -> tuple[DomainSpec, agent_types.AgentInfo, dict[str, float]]: ...

        def _setup(
            self,
            sandbox: SandboxRecord,
            spec: DomainSpec,
            plan: nic.NicPlan | None,
            restored: bool,
            saved_mac: str = "",
        ) -> agent_types.SandboxFiles: ...

        def _teardown(self, sandbox_id: str, sandbox: SandboxRecord | None = None) -> None: ...

    def _init_pool(self) -> None:
        """The pool, when the options ask for one and templates are on; leftovers of an
        earlier daemon run destroyed first, then the default shape filled."""
        self._pool = None
        self._pool_shapes = {}
        size = self._options.pool_size
        if size <= 0:
            return
        if self._templates is None:
            log.warning("vm backend: options.pool_size is set but VM templates are off: no pool")
            return
        self._pool = VmPool(
            size,
            PoolHooks(
                self._make_pool_vm,
                self._destroy_pool_vm,
                self._pool_vm_usable,
                self._pool_ready,
            ),
        )
        self._pool_making = ""
        atexit.register(self._stop_pool)
        threading.Thread(target=self._start_pool, name="vm-pool-init", daemon=True).start()

    def _stop_pool(self) -> None:
        """At exit: every idle VM destroyed, and the one being made (it would outlive the
        daemon; its files, if the exit is quicker, go at the next start)."""
        assert self._pool is not None
        self._pool.stop()
        making = self._pool_making
        if making:
            self._destroy_pool_vm(PoolVm(making, "", 0))

    def _start_pool(self) -> None:
        assert self._pool is not None
        self._destroy_left_pool_vms()
        try:
            memory_mib, vcpus = size_vm([], PodConfig(Metadata("")).resources, self._options)
            self._pool.want(self._pool_shape(memory_mib, vcpus, False))
        except (VmcriError, OSError) as exc:
            log.warning("VM pool: cannot know the default shape: %s", exc)
        self._pool.start()

    def _pool_shape(self, memory_mib: int, vcpus: int, limited: bool) -> str:
        key = self._shape(self._guest(), memory_mib, vcpus, limited).key()
        self._pool_shapes.setdefault(key, (memory_mib, vcpus, limited))
        return key

    # ---- the pods' side ----------------------------------------------------------------

    def new_sandbox_id(self, config: PodConfig) -> str:
        """An idle pool VM's ID when there is one of the pod's shape, else a fresh one."""
        pool = self._pool
        if pool is None:
            return new_id()
        sandbox_id = ""
        if not uses_userns(config.security.namespace_options):
            try:
                memory_mib, vcpus = size_vm([], config.resources, self._options)
                limited = config.resources.memory_limit_in_bytes > 0
                sandbox_id = pool.claim(self._pool_shape(memory_mib, vcpus, limited)) or ""
            except (VmcriError, OSError) as exc:
                log.warning("VM pool: cannot know the pod's shape: %s", exc)
        sandbox_id = sandbox_id or new_id()
        pool.begin(sandbox_id)
        return sandbox_id

    def _pool_end(self, sandbox_id: str) -> None:
        if self._pool is not None:
            self._pool.end(sandbox_id)

    def _pool_take(self, sandbox_id: str, usable: bool) -> PoolVm | None:
        """The pool VM made under this pod's ID, now the pod's; one the pod cannot use (it
        restores a checkpoint instead) is destroyed."""
        vm = self._pool.take(sandbox_id) if self._pool is not None else None
        if vm is not None and not usable:
            self._destroy_pool_vm(vm)
            return None
        return vm

    def _pool_lost(self, sandbox_id: str) -> bool:
        """An idle pool VM's domain died (True: it was one, and is gone)."""
        return self._pool is not None and self._pool.lost(sandbox_id)

    def _adopt_pooled(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        plan: nic.NicPlan | None,
        vm: PoolVm,
    ) -> tuple[DomainSpec, agent_types.SandboxFiles, int] | None:
        """The pod's VM from its pool VM: its domain, its files in the guest and its
        writable layer's size; None when the takeover failed (the VM is gone then, and the
        pod starts as any other)."""
        handle = vm.handle
        assert isinstance(handle, PoolHandle)
        try:
            spec, files = self._adopt(sandbox, layout, plan, vm)
        except (*RESTORE_FAILURES, HostCommandError) as exc:
            log.warning("sandbox %s: its pool VM failed, restoring another: %s", sandbox.id,
                        exc.message)  # fmt: skip
            self._undo_adopt(sandbox, layout, vm)
            return None
        return spec, files, handle.layer_mib

    def _adopt(
        self,
        sandbox: SandboxRecord,
        layout: SandboxLayout,
        plan: nic.NicPlan | None,
        vm: PoolVm,
    ) -> tuple[DomainSpec, agent_types.SandboxFiles]:
        """The pod takes over its pool VM: cgroup, NIC, resume, the pod's settings.
        Raises HypervisorError, HostCommandError, the agent's errors (the caller then
        destroys the VM and starts the pod another way)."""
        started = time.monotonic()
        handle = vm.handle
        assert isinstance(handle, PoolHandle)
        (layout.disk / POOL_FILE).unlink(missing_ok=True)  # the pod's VM now, whatever happens
        name = domain_name(sandbox.id)
        placement = self._placements[sandbox.id]
        self._placements[sandbox.id] = self._cgroups.place(
            placement, self._hypervisor.qemu_pid(name), name
        )
        self._placed.add(sandbox.id)
        if handle.placement.pod != placement.pod:  # the pool's own cgroup, now empty
            self._cgroups.remove(handle.placement)
        else:  # a pod without a cgroup parent: vmcri's cgroup of that ID is the pod's
            self._cgroups.weigh(placement, least=False)
        if plan is not None:
            nic.plug(self._taps, plan)
        self._hypervisor.resume(name)
        if plan is not None:
            self._hypervisor.attach_device(name, render_nic(plan.nic))
            nic.attach(self._taps, plan)
        resumed = time.monotonic()
        files = self._setup(sandbox, handle.spec, plan, restored=True)
        log.info(
            "sandbox %s: VM up (taken from the pool)",
            sandbox.id,
            extra={
                "start": "pooled",
                "resume_s": round(resumed - started, 3),
                "setup_s": round(time.monotonic() - resumed, 3),
                "sandbox_ready_s": round(time.monotonic() - started, 3),
            },
        )
        return handle.spec, files

    def _undo_adopt(self, sandbox: SandboxRecord, layout: SandboxLayout, vm: PoolVm) -> None:
        """A failed takeover: the VM and its files go (the pod's cgroup stays for the
        start that follows); nothing of it is reused."""
        handle = vm.handle
        assert isinstance(handle, PoolHandle)
        self._containers.drop_link(sandbox.id)
        try:
            self._hypervisor.destroy(domain_name(sandbox.id))
            nic.unplug(self._taps, sandbox.id, sandbox.network)
            self._remove_dirs(layout)
        except VmcriError as exc:
            log.error("sandbox %s: pool VM clean-up failed: %s", sandbox.id, exc.message)
        if handle.placement.pod != self._placements[sandbox.id].pod:
            wait_until(lambda: self._cgroups.remove(handle.placement), 5.0, 0.05)

    # ---- the pool's side ---------------------------------------------------------------

    def _make_pool_vm(self, shape: str) -> PoolVm:
        """Restore a template clone of ``shape`` under a new ID, check it, pause it.
        Raises TemplateUnusable (no template of the shape yet), the restore's errors;
        nothing is left of a failed one."""
        memory_mib, vcpus, limited = self._pool_shapes[shape]
        guest = self._guest()
        template = self._pool_template(shape, guest)
        if template is None:
            raise TemplateUnusable("no template of this shape yet")
        sandbox_id = self._pool_making = new_id()
        record = _pool_record(sandbox_id)
        layout = self._layout(sandbox_id)
        most = self._boot_size(memory_mib, vcpus, limited).max_memory_mib
        self._ensure_private_root()
        try:
            # Marked before anything else exists: a daemon killed from here on finds it.
            layout.disk.mkdir(parents=True, mode=0o700)
            _mark(layout, {"shape": shape, "memory_mib": memory_mib})
            placement = self._cgroups.prepare(record, most)
            self._placements[sandbox_id] = placement
            marker: dict[str, object] = {
                "shape": shape, "memory_mib": memory_mib, "placement": placement.runtime()
            }  # fmt: skip
            _mark(layout, marker)
            try:
                self._cgroups.weigh(placement, least=True)
            except HostCommandError as exc:
                log.warning("VM pool: %s", exc.message)
            layer_mib = self._prepare_dirs(layout)
            if self._pool is None or self._pool.stopped:
                raise TemplateUnusable("the daemon is stopping")
            spec, _, timings = self._restore(record, layout, guest, None, template)
            # Made now rather than while its pod waits, and found by the pod's SetupSandbox:
            # its own fresh writable disk, mounted, and a pod PID namespace (its infra
            # process: a fork and exec the guest takes ~0.3 s for under emulation; a pod
            # that shares no PID namespace leaves it idle). Nothing of a pod is set yet.
            lun = None
            if layout.writable_image.is_file():
                lun = self._disks.attach_writable(domain_name(sandbox_id), layout.writable_image)
            self._containers.link(record).client.setup_sandbox(writable_lun=lun, share_pid=True)
            self._hypervisor.pause(domain_name(sandbox_id))
            _mark(layout, {**marker, "idle": True})
        except BaseException:
            self._teardown(sandbox_id)
            raise
        finally:
            self._pool_making = ""
        log.info("VM pool: VM %s of shape %s ready", sandbox_id[:12], shape[:12], extra=timings)
        handle = PoolHandle(spec, self._placements.pop(sandbox_id), layer_mib)
        self._placed.discard(sandbox_id)
        return PoolVm(sandbox_id, shape, memory_mib, handle)

    def _destroy_pool_vm(self, vm: PoolVm) -> None:
        """Everything of the VM gone; a cgroup its QEMU still holds (exiting slowly, as
        at the daemon's exit under load) keeps a marker, so the next start removes it."""
        handle = vm.handle
        if isinstance(handle, PoolHandle):
            self._placements[vm.id] = handle.placement
        placement = self._placements.get(vm.id)
        try:
            self._teardown(vm.id)
            if placement is not None and not self._cgroups.remove(placement):
                layout = self._layout(vm.id)
                layout.disk.mkdir(parents=True, exist_ok=True, mode=0o700)
                _mark(layout, {"memory_mib": 0, "placement": placement.runtime()})
        except (VmcriError, OSError) as exc:
            log.error("VM pool: cannot destroy VM %s: %s", vm.id[:12], exc)

    def _pool_vm_usable(self, vm: PoolVm) -> bool:
        """Its domain runs (paused) and its shape's current template is the one it came
        from (a new guest image or QEMU makes a new shape)."""
        if not self._hypervisor.is_running(domain_name(vm.id)):
            return False
        return self._pool_template(vm.shape) is not None

    def _pool_ready(self, shape: str) -> bool:
        """A VM of ``shape`` can be made now. A shape a new guest image (or QEMU) replaced
        is replaced in the pool by the current one of the same sizes."""
        memory_mib, vcpus, limited = self._pool_shapes[shape]
        try:
            current = self._pool_shape(memory_mib, vcpus, limited)
        except (VmcriError, OSError):
            return False
        if current != shape and self._pool is not None:
            log.info("VM pool: shape %s replaced by %s", shape[:12], current[:12])
            self._pool.forget(shape)
            self._pool.want(current)
            return False
        return self._pool_template(shape) is not None

    def _pool_template(self, shape: str, guest: GuestImage | None = None) -> Template | None:
        """The current template of ``shape``; None: there is none (yet), or the shape is no
        longer what a pod of its sizes gets (a new guest image or QEMU)."""
        memory_mib, vcpus, limited = self._pool_shapes[shape]
        try:
            guest = guest or self._guest()
            if self._shape(guest, memory_mib, vcpus, limited).key() != shape:
                return None
            template = self._template_for(guest, memory_mib, vcpus, limited)
        except (VmcriError, OSError):
            return None
        return template if template is not None and template.shape.key() == shape else None

    def _destroy_left_pool_vms(self) -> None:
        """At start: the pool VMs an earlier daemon run left (stopped or killed) are
        destroyed with everything they hold. (Re-adopting them would need each checked
        against the current template; a refill is cheaper to get right.)"""
        for vm in pool_vms_on_disk(self._context.root):
            log.info("VM pool: destroying VM %s, left by an earlier daemon run", vm.sandbox_id[:12])
            if vm.placement is not None:
                self._placements[vm.sandbox_id] = vm.placement
            try:
                self._teardown(vm.sandbox_id)
            except (VmcriError, OSError) as exc:
                log.error("VM pool: cannot destroy VM %s: %s", vm.sandbox_id[:12], exc)


def _mark(layout: SandboxLayout, data: dict[str, object]) -> None:
    """Write the VM's ``pool.json`` whole (a reader never sees half of it)."""
    tmp = layout.disk / f".{POOL_FILE}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, layout.disk / POOL_FILE)


def _pool_record(sandbox_id: str) -> SandboxRecord:
    """The stand-in record a pool VM is made under: no pod yet, no cgroup parent (its
    cgroup is vmcri's own, below ``options.cgroup_parent``)."""
    return SandboxRecord(
        id=sandbox_id, handler="", backend="vm", config=PodConfig(Metadata("vmcri-pool"))
    )


def pool_vms_on_disk(root: Path) -> list[PooledVm]:
    """The pool VMs whose marker is under ``root`` (``<root>/backends/<handler>``)."""
    found: list[PooledVm] = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return found
    for name in entries:
        if len(name) != _SANDBOX_ID_LENGTH or not all(c in "0123456789abcdef" for c in name):
            continue
        try:
            with open(root / name / POOL_FILE, "rb") as f:
                data = json.loads(f.read(4096))
            memory_mib = int(data.get("memory_mib", 0))
            placement = Placement.from_runtime(
                {k: str(v) for k, v in dict(data.get("placement", {})).items()}
            )
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        found.append(PooledVm(name, memory_mib, placement, data.get("idle") is True))
    return found
