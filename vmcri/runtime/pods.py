"""Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and list.

The record is reserved (state CREATING, name taken) before the backend does any
work, so two concurrent requests for one pod name cannot both win; a backend
failure removes the reservation again, after the backend has undone its work.

The pod network comes first (as containerd's CRI plugin owns CNI and hands the
namespace to the shim): the network layer makes and pins the namespace, the
record notes what ADD is called with, ADD runs and its result is recorded,
and only then does the backend run the sandbox in it. Each step is in the
record before the next starts, so that StopPodSandbox and RemovePodSandbox
can DEL after a failure or a daemon killed half-way; a failure undoes every
step in reverse (backend, DEL, unpin, record).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

from vmcri.errors import InvalidArgument, NotFound, VmcriError
from vmcri.handlers.base import SandboxBackend, SandboxStarted
from vmcri.handlers.registry import Handler
from vmcri.ids import could_name
from vmcri.metrics import families as metrics
from vmcri.model import NamespaceMode, PodConfig, Resources
from vmcri.network.hostports import check_host_ports
from vmcri.network.netstats import InterfaceCounters
from vmcri.network.service import PodNetworking
from vmcri.oci.pod_files import pod_hostname
from vmcri.oci.userns import uses_userns
from vmcri.runtime.container_checks import validate_resources
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.runtime.host_namespaces import check_host_namespaces
from vmcri.store.records import SandboxRecord, SandboxState

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SandboxFilter:
    id: str = ""
    state: SandboxState | None = None
    labels: tuple[tuple[str, str], ...] = ()


class PodService:
    def __init__(self, services: Services, containers: ContainerService) -> None:
        self._s = services
        self._containers = containers
        self._reserve = threading.Lock()

    def run(
        self,
        config: PodConfig,
        runtime_handler: str,
        start: Callable[[SandboxRecord], SandboxStarted] | None = None,
    ) -> str:
        """Create and start a sandbox; returns its ID.

        ``start`` brings the sandbox up in the backend's place (RestorePod restores it
        from a checkpoint instead of booting it); by default the backend runs it.

        Raises InvalidArgument (bad config, host network on a handler without
        it), NotFound (unknown handler), AlreadyExists (name taken),
        FailedPrecondition (no pod network configured), and whatever CNI or
        the backend raises; nothing of a failed sandbox remains.
        """
        _validate_pod(config)
        # A pod of its own network without a host name gets its name, cut as kubelet cuts it
        # (a host-network pod shares the node's host name). Explicit ones are checked at the
        # edge; either way no backend sees one Linux would refuse.
        hostname = config.hostname or (
            pod_hostname(config.metadata.name) if _pod_network(config) else ""
        )
        config = dataclasses.replace(config, hostname=pod_hostname(hostname))
        handler = self._handler_for(config, runtime_handler)
        record = SandboxRecord(
            id=handler.backend.new_sandbox_id(config),
            handler=handler.name,
            backend=handler.backend_name,
            config=config,
            created_at=self._s.clock(),
        )
        with self._reserve:
            # Checked and reserved together: a concurrent pod sees this one's record.
            if self._s.networking is not None and self._s.networking.config.enabled:
                others = self._s.store.sandboxes.list()
                check_host_ports(config, (s.config for s in others if _holds_ports(s)))
            self._s.store.sandboxes.add(record)
        log.info("sandbox %s: starting with handler %s", record.id, handler.name)
        backend_ran = False
        start_clock = time.monotonic()
        try:
            net = self._s.networking
            late_netns = uses_userns(config.security.namespace_options) and (
                handler.backend.features().userns_owns_netns
            )
            if net is not None and _pod_network(config) and not late_netns:
                record = self._attach(net, record, net.create_netns(record.id))
            started = (start or handler.backend.run_sandbox)(record)
            backend_ran = True
            if net is not None and _pod_network(config) and late_netns:
                record = self._attach(net, record, started.netns_path)
            self._s.nri.run_pod_sandbox(record)
        except BaseException:
            self._undo_run(record.id, handler.backend, backend_ran)
            raise
        ips = record.network.addresses() if record.network is not None else ()
        self._s.store.sandboxes.set_fields(
            record.id,
            state=SandboxState.READY,
            runtime=started.runtime,
            netns_path=record.network.netns_path if record.network else started.netns_path,
            ip=ips[0] if ips else started.ip,
            additional_ips=ips[1:] if ips else started.additional_ips,
        )
        metrics.pod_started(handler.name, started.runtime, time.monotonic() - start_clock)
        return record.id

    def _handler_for(self, config: PodConfig, runtime_handler: str) -> Handler:
        """The handler; a host-network pod goes where its handler's config routes it.

        Raises InvalidArgument naming the namespace field a handler cannot give.
        """
        registry = self._s.handlers
        handler = registry.resolve(runtime_handler)
        handler = self._routed(config, handler)
        check_host_namespaces(
            config.security.namespace_options,
            handler,
            "config.linux.security_context.namespace_options",
        )
        return handler

    def _routed(self, config: PodConfig, handler: Handler) -> Handler:
        registry = self._s.handlers
        if _pod_network(config) or handler.backend.features().host_network:
            return handler
        handler_config = self._s.config.runtimes.get(handler.name)
        route = handler_config.host_network_handler if handler_config is not None else ""
        if route:
            return registry.resolve(route)
        raise InvalidArgument(
            "config.linux.security_context.namespace_options.network: NODE (host network) "
            f"is not supported by runtime handler {handler.name!r} ({handler.backend_name} "
            "pods have a network of their own); run the pod with the runc handler, or set "
            f"runtimes.{handler.name}.host_network_handler"
        )

    def _attach(self, net: PodNetworking, record: SandboxRecord, netns_path: str) -> SandboxRecord:
        """Plan, record, ADD, record, guard: a daemon killed in between still knows what to
        DEL (which also removes the guard)."""
        table = self._s.store.sandboxes
        record = table.set_fields(record.id, network=net.plan(record, netns_path))
        assert record.network is not None
        record = table.set_fields(record.id, network=net.add(record, record.network))
        net.guard_pod(record)
        return record

    def _undo_run(self, sandbox_id: str, backend: SandboxBackend, backend_ran: bool) -> None:
        """Undo a failed RunPodSandbox; errors are logged, the original one is raised."""
        record = self._s.store.sandboxes.find(sandbox_id)
        if record is None:
            return
        try:
            if backend_ran:
                backend.remove_sandbox(record)
            self._release_network(record)
            if self._s.networking is not None:
                self._s.networking.remove_netns(record.id)
        except VmcriError as exc:
            log.error("sandbox %s: clean-up after a failed start: %s", sandbox_id, exc.message)
            return  # keep the record: RemovePodSandbox can retry what is left
        self._s.store.sandboxes.remove(sandbox_id)

    def _release_network(self, sandbox: SandboxRecord) -> SandboxRecord:
        """CNI DEL unless done; recorded, so Remove after Stop does not repeat it."""
        net = self._s.networking
        if net is None or sandbox.network is None or sandbox.network.released:
            return sandbox
        released = net.release(sandbox)
        return self._s.store.sandboxes.set_fields(sandbox.id, network=released)

    def stop(self, sandbox_id: str) -> None:
        """Stop every container and the sandbox. Unknown or stopped sandboxes are success,
        so is an ID of any shape that cannot name one (nothing is looked up from it)."""
        if not could_name(sandbox_id):
            return
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            return
        self._containers.kill_all([c.id for c in self._s.store.containers_of(sandbox.id)])
        self._s.nri.stop_pod_sandbox(sandbox)
        self._s.handlers.backend_for(sandbox).stop_sandbox(sandbox)
        for container in self._s.store.containers_of(sandbox.id):
            self._containers.refresh(container.id)
        # CRI: Stop releases the pod's network resources (its IP) and may be repeated.
        sandbox = self._release_network(self._s.store.sandboxes.get(sandbox.id))
        self._s.store.sandboxes.set_fields(sandbox.id, state=SandboxState.NOTREADY)

    def remove(self, sandbox_id: str) -> None:
        """Stop it if needed, remove its containers and everything it held; idempotent
        (an unknown ID, or one of any shape that cannot name a sandbox, is success)."""
        if not could_name(sandbox_id):
            return
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            return
        if sandbox.state is not SandboxState.NOTREADY:
            self.stop(sandbox.id)
        for container in self._s.store.containers_of(sandbox.id):
            self._containers.remove(container.id)
        sandbox = self._s.store.sandboxes.get(sandbox.id)
        self._s.handlers.backend_for(sandbox).remove_sandbox(sandbox)
        # Again if Stop's DEL failed or never ran (a failed start, a killed daemon).
        sandbox = self._release_network(sandbox)
        if self._s.networking is not None:
            self._s.networking.remove_netns(sandbox.id)
        self._s.nri.remove_pod_sandbox(sandbox)
        self._s.store.sandboxes.remove(sandbox.id)
        log.info("sandbox %s: removed", sandbox.id)

    def status(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox record, its state checked against the backend; raises NotFound."""
        sandbox = self._s.store.sandboxes.get(sandbox_id)
        return self.refresh(sandbox)

    def refresh(self, sandbox: SandboxRecord) -> SandboxRecord:
        """Mark a READY sandbox whose isolation died as NOTREADY."""
        if sandbox.state is not SandboxState.READY:
            return sandbox
        if not self._s.handlers.backend_for(sandbox).sandbox_alive(sandbox):
            log.warning("sandbox %s: its isolation is gone; marking it NOTREADY", sandbox.id)
            sandbox = self._s.store.sandboxes.set_fields(sandbox.id, state=SandboxState.NOTREADY)
            for container in self._s.store.containers_of(sandbox.id):
                self._containers.refresh(container.id)
        return sandbox

    def check_network(self, sandbox_id: str) -> None:
        """CNI CHECK of a READY pod (after a restart): a broken network is logged, not fixed.

        kubelet sees the pod as it is; repairing it is the plugin's or a restart's job.
        The pod's anti-spoofing table is put back first: a firewall reload (``flush
        ruleset``) or an older vmcri may have left the pod without one.
        """
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        net = self._s.networking
        if net is None or sandbox is None or sandbox.state is not SandboxState.READY:
            return
        try:
            net.guard_pod(sandbox)
        except VmcriError as exc:
            log.error("sandbox %s: anti-spoofing table not restored: %s", sandbox.id, exc.message)
        try:
            net.check(sandbox)
        except VmcriError as exc:
            log.warning("sandbox %s: CNI CHECK failed: %s", sandbox.id, exc.message)
            return
        log.info("sandbox %s: CNI CHECK passed", sandbox.id)

    def network_usage(self, sandbox: SandboxRecord) -> tuple[InterfaceCounters, ...]:
        """Traffic of the pod's interfaces; none without pod networking (never raises)."""
        if self._s.networking is None:
            return ()
        return self._s.networking.counters(sandbox)

    def list(self, filt: SandboxFilter | None = None) -> list[SandboxRecord]:
        found: Iterable[SandboxRecord] = self._s.store.sandboxes.list()
        if filt is not None:
            found = (s for s in found if _matches(s, filt))
        return sorted(found, key=lambda s: s.created_at)

    def update_resources(
        self, sandbox_id: str, overhead: Resources | None, resources: Resources | None
    ) -> SandboxRecord:
        """Record the pod-level resources kubelet resized the pod to (UpdatePodSandboxResources).

        kubelet calls this during an in-place pod resize, after it has changed
        the pod-level cgroup itself, to tell the runtime (and its plugins) the
        pod's new overhead and resources. containerd, the reference, changes
        no cgroup here either: it hands the values to NRI plugins and records
        them on the sandbox. vmcri records them on the sandbox after the
        backend has made room for the new resources in a running pod (a VM
        grows); an absent message leaves that part as it was.

        Raises NotFound (sandbox), InvalidArgument (unlimited swap, or more
        than the pod can grow to, naming the field; the edge has checked each
        value's range), the backend's errors.
        """
        if overhead is not None:
            validate_resources(overhead, "overhead")
        if resources is not None:
            validate_resources(resources, "resources")
        sandbox = self.existing(sandbox_id)
        self._s.nri.update_pod_sandbox(sandbox, overhead, resources)
        if resources is not None and sandbox.state is SandboxState.READY:
            self._s.handlers.backend_for(sandbox).update_sandbox_resources(sandbox, resources)
        config = dataclasses.replace(
            sandbox.config,
            overhead=sandbox.config.overhead if overhead is None else overhead,
            resources=sandbox.config.resources if resources is None else resources,
        )
        sandbox = self._s.store.sandboxes.set_fields(sandbox.id, config=config)
        self._s.nri.post_update_pod_sandbox(sandbox)
        return sandbox

    def find(self, sandbox_id: str) -> SandboxRecord | None:
        """The sandbox record as stored (no backend is asked); None when there is none."""
        return self._s.store.sandboxes.find(sandbox_id)

    def existing(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox, in whatever state, which must exist; raises NotFound naming
        ``pod_sandbox_id`` (unlike ``Table.get``, whose message names no CRI field)."""
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            raise NotFound(f"pod_sandbox_id {sandbox_id!r}: no such sandbox")
        return sandbox


def _matches(sandbox: SandboxRecord, filt: SandboxFilter) -> bool:
    if filt.id and not sandbox.id.startswith(filt.id):
        return False
    if filt.state is not None and sandbox.state is not filt.state:
        return False
    return all(sandbox.config.labels.get(k) == v for k, v in filt.labels)


def _validate_pod(config: PodConfig) -> None:
    """What the edge (``cri/limits.py``) does not hold a pod's fields to: a name at all,
    and none of CNI_ARGS' separators. Host name, log directory and ports it checks."""
    meta = config.metadata
    if not meta.name:
        raise InvalidArgument("config.metadata.name: must not be empty")
    for field in ("name", "namespace", "uid"):
        # They travel in CNI_ARGS ("K=V;K=V"), where these would forge other arguments.
        if any(c in getattr(meta, field) for c in ";="):
            raise InvalidArgument(f"config.metadata.{field}: must not contain ';' or '='")


def _pod_network(config: PodConfig) -> bool:
    """Whether the pod has a network of its own (not the host's)."""
    return config.security.namespace_options.network is not NamespaceMode.NODE


def _holds_ports(sandbox: SandboxRecord) -> bool:
    """Whether the sandbox has, or is about to get, its hostPorts (until its DEL)."""
    if sandbox.network is not None:
        return not sandbox.network.released
    return sandbox.state is SandboxState.CREATING
