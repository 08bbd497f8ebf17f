"""Containers: create, start, stop, remove, status, list, exec, resources, logs.

The record is the truth kubelet sees. A running container is its pod's supervisor's
(``vmcri.supervisor.api.ContainerSupervisor``, placed by the pod's backend), which this
service calls directly; the backend prepares and releases what the container needs of
its pod (rootfs, volumes, room). A container becomes EXITED in one place
(``vmcri.runtime.exits``, decided inside the store's update) when its exit arrives, once,
carrying its code, reason and time; so an exit event, the reaper and StopContainer agree
on one state and STOPPED is published once. Stopping is written once for every backend:
the record's stop signal, a wait for the exit bounded by the timeout and the RPC's
deadline, then SIGKILL; and so is killing a stopping pod's containers (:meth:`kill_all`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vmcri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SignatureRefused,
    VmcriError,
)
from vmcri.handlers.base import SandboxBackend
from vmcri.handlers.checkpointer import RestoredContainer
from vmcri.ids import could_name, new_id
from vmcri.model import ContainerConfig, Resources
from vmcri.runtime import identity
from vmcri.runtime.container_checks import (
    container_log_path,
    validate_container,
    validate_resources,
)
from vmcri.runtime.context import Services
from vmcri.runtime.events import ContainerEvent, EventType
from vmcri.runtime.host_namespaces import check_host_namespaces
from vmcri.runtime.pod_checks import PodChecks
from vmcri.runtime.usage_bounds import bounded
from vmcri.store.records import (
    ContainerRecord,
    ContainerState,
    ImageVolume,
    SandboxRecord,
    SandboxState,
)
from vmcri.supervisor.api import ContainerExit, ContainerSupervisor, ContainerUsage, ExecResult

log = logging.getLogger(__name__)

KILL_GRACE_S = 10.0
"""How long a container may take to end after SIGKILL (a VM under emulation is slow)."""
RECHECK_S = 1.0
"""A stop waiting for an exit event also looks again this often (a dead agent sends none)."""
REFRESH_ROUND_S = 1.0
"""How long one reaper round waits for the pods' checks (the reaper runs once a second)."""


@dataclasses.dataclass(frozen=True)
class ContainerFilter:
    id: str = ""
    state: ContainerState | None = None
    sandbox_id: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Restoring:
    """A checkpoint's container being restored: the ID it keeps ("": a new one), and what
    brings it back in its restored sandbox (its runtime facts and pid; it stays CREATED
    until the caller marks it RUNNING)."""

    id: str
    bring_back: Callable[[SandboxRecord, ContainerRecord], RestoredContainer]


class ContainerService:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._checks = PodChecks()

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            raise NotFound(f"pod_sandbox_id {sandbox_id!r}: no such sandbox")
        return sandbox

    def _backend(self, sandbox: SandboxRecord) -> SandboxBackend:
        return self._s.handlers.backend_for(sandbox)

    def _supervisor(self, sandbox: SandboxRecord) -> ContainerSupervisor:
        return self._backend(sandbox).supervisor

    def _publish(self, container: ContainerRecord, kind: EventType) -> None:
        self._s.events.publish(
            ContainerEvent(container.id, container.sandbox_id, kind, self._s.clock())
        )

    def create(
        self, sandbox_id: str, config: ContainerConfig, restored: Restoring | None = None
    ) -> str:
        """Create a container in a READY sandbox; returns its ID.

        ``restored``: a container of a pod checkpoint, already back in the restored
        sandbox: it keeps the checkpoint's ID and ``restored.bring_back`` stands in for
        the backend's ``create_container``.

        Raises NotFound (sandbox, image), FailedPrecondition (sandbox not ready; the
        image's signatures do not meet the pod's namespace's policy: SignatureRefused),
        InvalidArgument (config), AlreadyExists (name or, restored, ID taken), backend
        errors.
        """
        validate_container(config)
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(
                f"pod_sandbox_id {sandbox.id}: sandbox is {sandbox.state.value}, not READY"
            )
        check_host_namespaces(
            config.security.namespace_options,
            self._s.handlers.resolve(sandbox.handler),
            "config.linux.security_context.namespace_options",
            network=True,
        )
        log_path = container_log_path(sandbox, config)
        # The pod's namespace's signature policy must accept the image, pulled or not
        # for it (kubelet's IfNotPresent skips PullImage): vmcri.images.trust.admission.
        namespace = sandbox.config.metadata.namespace
        image = self._s.images.image_for_container(config.image, namespace)
        volumes = self._image_volumes(config, namespace)
        record = ContainerRecord(
            id=restored.id if restored is not None and restored.id else new_id(),
            sandbox_id=sandbox.id,
            config=config,
            image_id=image.id,
            image_name=image.name,
            created_at=self._s.clock(),
            log_path=log_path,
            image_volumes=volumes,
        )
        record = self._s.nri.create_container(sandbox, record)
        self._s.store.containers.add(record)
        try:
            if restored is not None:
                back = restored.bring_back(sandbox, record)
                runtime, pid = back.runtime, back.pid
            else:
                runtime = self._backend(sandbox).create_container(sandbox, record, image)
                pid = 0
        except BaseException:
            self._s.store.containers.remove(record.id)
            self._s.nri.remove_container(record)
            raise
        record = self._s.store.containers.set_fields(
            record.id,
            runtime=runtime,
            pid=pid,
            user=identity.container_user(config, image),
            stop_signal=identity.stop_signal(config, image),
        )
        self._publish(record, EventType.CREATED)
        self._s.nri.post_create_container(sandbox, record)
        return record.id

    def _image_volumes(self, config: ContainerConfig, namespace: str) -> tuple[ImageVolume, ...]:
        """Resolve each image volume's image (kubelet pulls it before CreateContainer).

        Raises NotFound or SignatureRefused naming ``config.mounts[i].image`` when it
        is not pulled or the pod's namespace's signature policy refuses it.
        """
        volumes = []
        for i, mount in enumerate(config.mounts):
            if not mount.image:
                continue
            if not mount.readonly:
                # An image is shared by every pod that mounts it: never writable (KEP-4639).
                raise InvalidArgument(
                    f"config.mounts[{i}].readonly: an image volume ({mount.image!r}) is "
                    "read-only; set readonly: true"
                )
            try:
                info = self._s.images.image_for_container(mount.image, namespace)
            except (NotFound, SignatureRefused) as exc:
                raise type(exc)(f"config.mounts[{i}].image: {exc.message}") from exc
            volumes.append(ImageVolume(i, info.id, info.layer_dirs))
        return tuple(volumes)

    def start(self, container_id: str) -> None:
        container = self._s.store.containers.get(container_id)
        if container.state is not ContainerState.CREATED:
            raise FailedPrecondition(
                f"container_id {container.id}: container is {container.state.value}, not CREATED"
            )
        sandbox = self._sandbox(container.sandbox_id)
        self._s.nri.start_container(sandbox, container)
        try:
            pid = self._supervisor(sandbox).start(sandbox, container)
        except BaseException as exc:
            failed = ContainerExit(128, self._s.clock(), "StartError", str(exc)[:1024])
            self._s.exits.fold(container.id, failed)
            raise
        now = self._s.clock()

        def started(record: ContainerRecord) -> ContainerRecord:
            if record.state is ContainerState.CREATED:
                return dataclasses.replace(
                    record, state=ContainerState.RUNNING, pid=pid, started_at=now
                )
            if record.state is ContainerState.EXITED and not record.started_at:
                # It ended before its start was recorded (the exit event won the race).
                return dataclasses.replace(record, pid=pid, started_at=now)
            return record

        container = self._s.store.containers.update(container.id, started)
        self._publish(container, EventType.STARTED)
        self._s.nri.post_start_container(sandbox, container)
        if container.state is ContainerState.EXITED:
            self._publish(container, EventType.STOPPED)

    def stop(self, container_id: str, timeout_s: int, deadline: float | None = None) -> None:
        """Stop it: its stop signal, up to ``timeout_s`` for it to exit, then SIGKILL.

        ``deadline`` (``time.monotonic()``) is the RPC's: no wait goes past it. A stopped
        or unknown container is success: the CRI makes StopContainer idempotent, and
        kubelet repeats it after restarts for containers that are gone. Raises
        DeadlineExceeded when the container is still running after SIGKILL. An ID of any
        shape that cannot name a container is success too (nothing is looked up from it).
        """
        if not could_name(container_id):
            return
        container = self._s.store.containers.find(container_id)
        if container is None or container.state is ContainerState.EXITED:
            return
        sandbox = self._s.store.sandboxes.find(container.sandbox_id)
        if sandbox is None:
            return
        supervisor = self._supervisor(sandbox)
        if timeout_s > 0 and container.state is not ContainerState.CREATED:
            supervisor.signal(sandbox, container, _signal_number(container.stop_signal))
            if self._wait_exited(container.id, _until(timeout_s, deadline)):
                return
        supervisor.signal(sandbox, container, signal.SIGKILL)
        if not self._wait_exited(container.id, _until(KILL_GRACE_S, deadline)):
            raise DeadlineExceeded(f"container_id {container.id}: still running after SIGKILL")

    def kill_all(self, container_ids: Sequence[str]) -> None:
        """SIGKILL each container, then wait for all (StopPodSandbox); never raises. The one
        owner of it: the pod's backend then stops the sandbox, whatever still ran with it."""
        waiting = []
        for container_id in container_ids:
            container = self._s.store.containers.find(container_id)
            if container is None or container.state is ContainerState.EXITED:
                continue
            sandbox = self._s.store.sandboxes.find(container.sandbox_id)
            if sandbox is None:
                continue
            try:
                self._supervisor(sandbox).signal(sandbox, container, signal.SIGKILL)
            except VmcriError as exc:
                log.warning("container %s: SIGKILL failed: %s", container.id, exc.message)
            waiting.append(container.id)
        until = _until(KILL_GRACE_S, None)
        for container_id in waiting:
            try:
                self._wait_exited(container_id, until)
            except VmcriError as exc:
                log.warning("container %s: no exit after SIGKILL: %s", container_id, exc.message)

    def _wait_exited(self, container_id: str, until: float) -> bool:
        """Wait until the record says EXITED; woken by each exit folded, rechecked each
        second (a dead agent sends no event: the check finds it gone)."""
        while True:
            seen = self._s.exits.folds()
            if self.refresh(container_id).state is ContainerState.EXITED:
                return True
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            self._s.exits.wait_next(seen, min(remaining, RECHECK_S))

    def remove(self, container_id: str) -> None:
        """Remove it, stopping it first if it runs; an unknown container is success, so is
        an ID of any shape that cannot name one (nothing is looked up from it)."""
        if not could_name(container_id):
            return
        container = self._s.store.containers.find(container_id)
        if container is None:
            return
        sandbox = self._s.store.sandboxes.find(container.sandbox_id)
        if sandbox is not None:
            self.stop(container.id, 0)
            container = self._s.store.containers.get(container.id)
            self._backend(sandbox).remove_container(sandbox, container)
        self._s.nri.remove_container(container)
        self._s.store.containers.remove(container.id)
        self._publish(container, EventType.DELETED)

    def status(self, container_id: str) -> ContainerRecord:
        return self.refresh(self._s.store.containers.get(container_id).id)

    def refresh(self, container_id: str) -> ContainerRecord:
        """Check the container against its pod's supervisor: one whose agent is gone has
        ended (its exit was sent up and folded before the check returns), one the
        supervisor has lost ended in a way nobody knows."""
        container = self._s.store.containers.get(container_id)
        if container.state is ContainerState.EXITED:
            return container
        sandbox = self._s.store.sandboxes.find(container.sandbox_id)
        if sandbox is None:
            return container
        liveness = self._supervisor(sandbox).liveness(sandbox, container)
        container = self._s.store.containers.get(container.id)
        if container.state is ContainerState.EXITED:
            return container
        if liveness.running:
            if container.state is ContainerState.UNKNOWN:
                return self._s.store.containers.update(container.id, _known_running)
            return container
        if container.state is ContainerState.CREATED:
            return container
        # The supervisor has lost it: it ended, how is unknown.
        return self._s.exits.fold(container.id, ContainerExit(255, self._s.clock(), "Unknown"))

    def recover_exits(self) -> None:
        """At daemon start: fold the exits kept on disk that the daemon before did not.

        The only time an exit is read back: while a daemon runs, each one arrives as an
        event. A pod whose handler is gone from the configuration is left as it is."""
        for container in self._s.store.containers.list():
            if container.state is ContainerState.EXITED:
                continue
            sandbox = self._s.store.sandboxes.find(container.sandbox_id)
            if sandbox is None:
                continue
            try:
                found = self._supervisor(sandbox).recorded_exit(sandbox, container.id)
                if found is not None:
                    self._s.exits.fold(container.id, found)
            except VmcriError as exc:
                log.warning("container %s: exit record not read: %s", container.id, exc.message)

    def refresh_all(self, wait_s: float = REFRESH_ROUND_S) -> None:
        """Poll every live container once (the daemon's reaper calls this).

        Each sandbox's containers are checked on their own thread, and a sandbox whose
        previous check still runs is skipped (see pod_checks.py): a guest that hangs its
        agent delays no other pod. Returns after at most ``wait_s`` seconds; slower
        checks finish in the background.
        """
        live: dict[str, list[str]] = {}
        for container in self._s.store.containers.list():
            if container.state is not ContainerState.EXITED:
                live.setdefault(container.sandbox_id, []).append(container.id)
        self._checks.run(
            {
                sandbox_id: functools.partial(self._refresh_each, ids)
                for sandbox_id, ids in live.items()
            },
            wait_s,
        )

    def _refresh_each(self, container_ids: Sequence[str]) -> None:
        for container_id in container_ids:
            try:
                self.refresh(container_id)
            except NotFound:
                continue
            except Exception:
                log.exception("container %s: status refresh failed", container_id)

    def list(self, filt: ContainerFilter | None = None) -> list[ContainerRecord]:
        found: Iterable[ContainerRecord] = self._s.store.containers.list()
        if filt is not None:
            found = (c for c in found if _matches(c, filt))
        return sorted(found, key=lambda c: c.created_at)

    def _running(self, container_id: str) -> tuple[SandboxRecord, ContainerRecord]:
        container = self.refresh(self._s.store.containers.get(container_id).id)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(
                f"container_id {container.id}: container is {container.state.value}, not RUNNING"
            )
        return self._sandbox(container.sandbox_id), container

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout_s: int) -> ExecResult:
        if not cmd:
            raise InvalidArgument("cmd: must not be empty")
        sandbox, container = self._running(container_id)
        return self._supervisor(sandbox).exec_sync(sandbox, container, cmd, timeout_s)

    def update_resources(self, container_id: str, resources: Resources) -> None:
        validate_resources(resources, "linux")
        container = self._s.store.containers.get(container_id)
        if container.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise FailedPrecondition(
                f"container_id {container.id}: container is {container.state.value}"
            )
        sandbox = self._sandbox(container.sandbox_id)
        resources = self._s.nri.update_container(sandbox, container, resources)
        self._backend(sandbox).update_resources(sandbox, container, resources)
        config = dataclasses.replace(container.config, resources=resources)
        container = self._s.store.containers.set_fields(container.id, config=config)
        self._s.nri.post_update_container(sandbox, container)

    def reopen_log(self, container_id: str) -> None:
        sandbox, container = self._running(container_id)
        self._supervisor(sandbox).reopen_log(sandbox, container)

    def usage(
        self, container_id: str, best_effort: bool = False
    ) -> tuple[ContainerRecord, ContainerUsage | None]:
        """A usage sample of a running container (None otherwise).

        With ``best_effort`` (list RPCs), a container whose backend cannot answer
        gets no sample instead of failing the whole list.
        """
        container = self._s.store.containers.get(container_id)
        if container.state is not ContainerState.RUNNING:
            return container, None
        sandbox = self._sandbox(container.sandbox_id)
        try:
            sample = self._supervisor(sandbox).usage(sandbox, container)
            return container, bounded(sample, self._s.memory_bound, self._s.clock())
        except VmcriError as exc:
            if not best_effort:
                raise
            log.warning("container %s: no usage sample: %s", container.id, exc.message)
            return container, None

    def find(self, container_id: str) -> ContainerRecord | None:
        """The container record as stored (no backend is asked); None when there is none."""
        return self._s.store.containers.find(container_id)

    def of_sandbox(self, sandbox_id: str) -> Sequence[ContainerRecord]:
        """The sandbox's containers as recorded (no backend is asked), oldest first."""
        return sorted(self._s.store.containers_of(sandbox_id), key=lambda c: c.created_at)


def _known_running(record: ContainerRecord) -> ContainerRecord:
    if record.state is ContainerState.UNKNOWN:
        return dataclasses.replace(record, state=ContainerState.RUNNING)
    return record


def _signal_number(name: str) -> int:
    """The number of a stop signal name ("SIGTERM", "TERM"); SIGTERM when unknown."""
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return int(signal.SIGTERM)


def _until(timeout_s: float, deadline: float | None) -> float:
    """``timeout_s`` from now on the monotonic clock, but never past ``deadline``."""
    until = time.monotonic() + timeout_s
    return until if deadline is None else min(until, deadline)


def _matches(container: ContainerRecord, filt: ContainerFilter) -> bool:
    if filt.id and not container.id.startswith(filt.id):
        return False
    if filt.sandbox_id and not container.sandbox_id.startswith(filt.sandbox_id):
        return False
    if filt.state is not None and container.state is not filt.state:
        return False
    return all(container.config.labels.get(k) == v for k, v in filt.labels)
