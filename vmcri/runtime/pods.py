"""Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and list.

The record is reserved (state CREATING, name taken) before the backend does any
work, so two concurrent requests for one pod name cannot both win; a backend
failure removes the reservation again, after the backend has undone its work.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

from vmcri.errors import InvalidArgument, NotFound
from vmcri.handlers.base import SandboxBackend
from vmcri.ids import new_id
from vmcri.metrics import families as metrics
from vmcri.model import PodConfig, Resources
from vmcri.runtime.containers import ContainerService, validate_resources
from vmcri.runtime.context import Services
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

    def backend_of(self, sandbox: SandboxRecord) -> SandboxBackend:
        return self._s.registry().resolve(sandbox.handler).backend

    def run(self, config: PodConfig, runtime_handler: str) -> str:
        """Create and start a sandbox; returns its ID.

        Raises InvalidArgument (bad config), NotFound (unknown handler),
        AlreadyExists (name taken), and whatever the backend raises.
        """
        _validate_pod(config)
        handler = self._s.registry().resolve(runtime_handler)
        record = SandboxRecord(
            id=new_id(),
            handler=handler.name,
            backend=handler.backend_name,
            config=config,
            created_at=self._s.clock(),
        )
        self._s.store.sandboxes.add(record)
        log.info("sandbox %s: starting with handler %s", record.id, handler.name)
        start_clock = time.monotonic()
        try:
            started = handler.backend.run_sandbox(record)
        except BaseException:
            self._s.store.sandboxes.remove(record.id)
            raise
        self._s.store.sandboxes.set_state_fields(
            record.id,
            state=SandboxState.READY,
            runtime=started.runtime,
            netns_path=started.netns_path,
            ip=started.ip,
            additional_ips=started.additional_ips,
        )
        metrics.pod_started(handler.name, started.runtime, time.monotonic() - start_clock)
        return record.id

    def stop(self, sandbox_id: str) -> None:
        """Stop every container and the sandbox. Unknown or stopped sandboxes are success."""
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            return
        containers = self._s.store.containers_of(sandbox.id)
        self.backend_of(sandbox).stop_sandbox(sandbox, containers)
        for container in containers:
            self._containers.refresh(container.id)
        self._s.store.sandboxes.set_state_fields(sandbox.id, state=SandboxState.NOTREADY)

    def remove(self, sandbox_id: str) -> None:
        """Stop it if needed, remove its containers and everything it held; idempotent."""
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            return
        if sandbox.state is not SandboxState.NOTREADY:
            self.stop(sandbox.id)
        for container in self._s.store.containers_of(sandbox.id):
            self._containers.remove(container.id)
        self.backend_of(sandbox).remove_sandbox(sandbox)
        self._s.store.sandboxes.remove(sandbox.id)
        log.info("sandbox %s: removed", sandbox.id)

    def status(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox record, its state checked against the backend; raises NotFound."""
        sandbox = self._s.store.sandboxes.get(sandbox_id)
        return self.refresh(sandbox)

    def refresh(self, sandbox: SandboxRecord) -> SandboxRecord:
        """Mark a READY sandbox whose isolation died as NOTREADY."""
        if sandbox.state is SandboxState.READY and not self.backend_of(sandbox).sandbox_alive(
            sandbox
        ):
            log.warning("sandbox %s: its isolation is gone; marking it NOTREADY", sandbox.id)
            sandbox = self._s.store.sandboxes.set_state_fields(
                sandbox.id, state=SandboxState.NOTREADY
            )
            for container in self._s.store.containers_of(sandbox.id):
                self._containers.refresh(container.id)
        return sandbox

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
        them on the sandbox. vmcri records them on the sandbox, where a later
        VM resize can find them; an absent message leaves that part as it was.

        Raises NotFound (sandbox), InvalidArgument (negative values, naming the field).
        """
        if overhead is not None:
            validate_resources(overhead, "overhead")
        if resources is not None:
            validate_resources(resources, "resources")
        sandbox = self.ready(sandbox_id)
        config = dataclasses.replace(
            sandbox.config,
            overhead=sandbox.config.overhead if overhead is None else overhead,
            resources=sandbox.config.resources if resources is None else resources,
        )
        return self._s.store.sandboxes.set_state_fields(sandbox.id, config=config)

    def ready(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox, which must exist; raises NotFound."""
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
    meta = config.metadata
    if not meta.name:
        raise InvalidArgument("config.metadata.name: must not be empty")
    if config.log_directory and not config.log_directory.startswith("/"):
        raise InvalidArgument("config.log_directory: must be an absolute path")
    if config.hostname and (len(config.hostname) > 64 or "/" in config.hostname):
        raise InvalidArgument("config.hostname: must be at most 64 characters, without '/'")
    for i, port in enumerate(config.port_mappings):
        for field in ("container_port", "host_port"):
            if not 0 <= getattr(port, field) <= 65535:
                raise InvalidArgument(f"config.port_mappings[{i}].{field}: out of range")
