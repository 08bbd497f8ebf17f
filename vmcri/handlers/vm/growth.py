"""When a pod's VM grows: before a container, or the pod, gets limits the VM cannot hold.

``VmGrowth`` is the part of ``VmBackend`` (backend.py) that decides whether the pod's
limits still fit its VM and by how much it must grow (``sizing.py``), and has ``grow.py``
do it, with the VM's QEMU back in libvirt's cgroup while a vCPU is plugged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmcri.errors import FailedPrecondition
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.accel import AccelChoice
from vmcri.handlers.vm.domain import domain_name, plugs_vcpus
from vmcri.handlers.vm.grow import HotplugGuard, PodLocks, grow
from vmcri.handlers.vm.hypervisor import Hypervisor
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.sizing import VmSize, plan_growth, pod_demand
from vmcri.model import Resources
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord
from vmcri.supervisor.containers import SupervisedContainers


class VmGrowth:
    """Growing a pod's VM; a part of ``VmBackend``, which sets what is declared here."""

    _options: VmOptions
    _context: BackendContext
    _accel: AccelChoice
    _hypervisor: Hypervisor
    _containers: SupervisedContainers
    _grow_locks: PodLocks

    if TYPE_CHECKING:

        def _alive(self, name: str) -> bool: ...

        def down_message(self) -> str: ...

        def _hotplug_guard(self, sandbox: SandboxRecord) -> HotplugGuard: ...

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
