"""Containers: create, start, stop, remove, status, list, exec, resources, logs.

The record is the truth kubelet sees. A container becomes EXITED in one place
(:meth:`ContainerService._fold_exit`, decided inside the store's update), when a
backend reports an exit (an event: ``Services.container_exited``) or a status
call finds one; so an exit event, the reaper and StopContainer agree on one state
and STOPPED is published once. Stopping is written once for every backend: the
record's stop signal, a wait for the exit event bounded by the timeout and the
RPC's deadline, then SIGKILL.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence

from vmcri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    VmcriError,
)
from vmcri.handlers.base import ContainerUsage, ExecResult, SandboxBackend
from vmcri.host.imagevolumes import check_sub_path
from vmcri.ids import could_name, new_id
from vmcri.model import ContainerConfig, Resources
from vmcri.runtime import identity
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


class ContainerService:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._checks = PodChecks()
        self._exited = threading.Condition()
        self._exit_count = 0
        services.exit_listeners.append(self._on_exit)

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            raise NotFound(f"pod_sandbox_id {sandbox_id!r}: no such sandbox")
        return sandbox

    def _backend(self, sandbox: SandboxRecord) -> SandboxBackend:
        return self._s.registry().backend_for(sandbox)

    def _publish(self, container: ContainerRecord, kind: EventType) -> None:
        self._s.events.publish(
            ContainerEvent(container.id, container.sandbox_id, kind, self._s.clock())
        )

    def create(self, sandbox_id: str, config: ContainerConfig) -> str:
        """Create a container in a READY sandbox; returns its ID.

        Raises NotFound (sandbox, image), FailedPrecondition (sandbox not ready),
        InvalidArgument (config), AlreadyExists (name taken), backend errors.
        """
        validate_container(config)
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(
                f"pod_sandbox_id {sandbox.id}: sandbox is {sandbox.state.value}, not READY"
            )
        check_host_namespaces(
            config.security.namespace_options,
            self._s.registry().resolve(sandbox.handler),
            "config.linux.security_context.namespace_options",
            network=True,
        )
        log_path = _log_path(sandbox, config)
        image = self._s.image_source().image_for_container(config.image)
        volumes = self._image_volumes(config)
        record = ContainerRecord(
            id=new_id(),
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
            runtime = self._backend(sandbox).create_container(sandbox, record, image)
        except BaseException:
            self._s.store.containers.remove(record.id)
            self._s.nri.remove_container(record)
            raise
        record = self._s.store.containers.set_fields(
            record.id,
            runtime=runtime,
            user=identity.container_user(config, image),
            stop_signal=identity.stop_signal(config, image),
        )
        self._publish(record, EventType.CREATED)
        self._s.nri.post_create_container(sandbox, record)
        return record.id

    def _image_volumes(self, config: ContainerConfig) -> tuple[ImageVolume, ...]:
        """Resolve each image volume's image (kubelet pulls it before CreateContainer).

        Raises NotFound naming ``config.mounts[i].image`` when it is not pulled.
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
                info = self._s.image_source().image_for_container(mount.image)
            except NotFound as exc:
                raise NotFound(f"config.mounts[{i}].image: {exc.message}") from exc
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
            pid = self._backend(sandbox).start_container(sandbox, container)
        except BaseException as exc:
            self._fold_exit(container.id, 128, self._s.clock(), "StartError", str(exc)[:1024])
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
        backend = self._backend(sandbox)
        if timeout_s > 0 and container.state is not ContainerState.CREATED:
            backend.signal_container(sandbox, container, _signal_number(container.stop_signal))
            if self._wait_exited(container.id, _until(timeout_s, deadline)):
                return
        backend.signal_container(sandbox, container, signal.SIGKILL)
        if not self._wait_exited(container.id, _until(KILL_GRACE_S, deadline)):
            raise DeadlineExceeded(f"container_id {container.id}: still running after SIGKILL")

    def kill_all(self, container_ids: Sequence[str]) -> None:
        """SIGKILL each container, then wait for all (StopPodSandbox); never raises."""
        waiting = []
        for container_id in container_ids:
            container = self._s.store.containers.find(container_id)
            if container is None or container.state is ContainerState.EXITED:
                continue
            sandbox = self._s.store.sandboxes.find(container.sandbox_id)
            if sandbox is None:
                continue
            try:
                self._backend(sandbox).signal_container(sandbox, container, signal.SIGKILL)
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
        """Wait until the record says EXITED; woken by exit events, rechecked each second."""
        while True:
            with self._exited:
                seen = self._exit_count
            if self.refresh(container_id).state is ContainerState.EXITED:
                return True
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            with self._exited:
                if self._exit_count == seen:
                    self._exited.wait(min(remaining, RECHECK_S))

    def _on_exit(self, container_id: str) -> None:
        """A backend recorded an exit (its event thread): fold it, wake the waiters."""
        try:
            self.refresh(container_id)
        except NotFound:
            pass
        except Exception:
            log.exception("container %s: folding its exit failed", container_id)
        with self._exited:
            self._exit_count += 1
            self._exited.notify_all()

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
        """Fold what the backend knows now into the record; publish STOPPED on an exit."""
        container = self._s.store.containers.get(container_id)
        if container.state is ContainerState.EXITED:
            return container
        sandbox = self._s.store.sandboxes.find(container.sandbox_id)
        if sandbox is None:
            return container
        liveness = self._backend(sandbox).container_liveness(sandbox, container)
        if liveness.exit is not None:
            found = liveness.exit
            reason = found.reason or ("Completed" if found.exit_code == 0 else "Error")
            return self._fold_exit(
                container.id, found.exit_code, found.finished_at, reason, found.message
            )
        if liveness.running:
            if container.state is ContainerState.UNKNOWN:
                return self._s.store.containers.update(container.id, _known_running)
            return container
        if container.state is ContainerState.CREATED:
            return container
        # The backend has lost it: it ended, how is unknown.
        return self._fold_exit(container.id, 255, self._s.clock(), "Unknown", "")

    def _fold_exit(
        self, container_id: str, exit_code: int, finished: int, reason: str, message: str
    ) -> ContainerRecord:
        """The one place a container becomes EXITED: decided inside the store's update, so
        of two folds (an exit event and a StopContainer) only the first changes the record
        and publishes STOPPED."""
        before: list[ContainerState] = []

        def exited(record: ContainerRecord) -> ContainerRecord:
            if record.state is ContainerState.EXITED:
                return record
            before.append(record.state)
            return dataclasses.replace(
                record,
                state=ContainerState.EXITED,
                exit_code=exit_code,
                finished_at=finished,
                reason=reason,
                message=message,
            )

        container = self._s.store.containers.update(container_id, exited)
        if before and (before[0] is not ContainerState.CREATED or container.started_at):
            self._publish(container, EventType.STOPPED)
        if before:
            self._s.nri.container_stopped(container)
        return container

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
        return self._backend(sandbox).exec_sync(sandbox, container, cmd, timeout_s)

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
        self._backend(sandbox).reopen_log(sandbox, container)

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
            sample = self._backend(sandbox).container_usage(sandbox, container)
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


def _log_path(sandbox: SandboxRecord, config: ContainerConfig) -> str:
    """The absolute log file path: the pod's log_directory joined with log_path."""
    if not config.log_path:
        return ""
    if not sandbox.config.log_directory:
        raise InvalidArgument("log_path: the sandbox has no log_directory to put it in")
    if os.path.isabs(config.log_path) or ".." in config.log_path.split("/"):
        raise InvalidArgument(
            f"config.log_path {config.log_path!r}: must be relative to the pod's "
            "log_directory and stay inside it"
        )
    return os.path.normpath(os.path.join(sandbox.config.log_directory, config.log_path))


def validate_resources(resources: Resources, where: str) -> None:
    """Raises InvalidArgument naming ``where.memory_swap_limit_in_bytes`` for -1.

    The edge (``cri/limits.py``) has already held every value to the kernel's range;
    -1 passes there, as the CRI lets kubelet ask for unlimited swap with it (cgroup v1),
    but vmcri does not offer it (the OCI spec generator refuses it too), so a pod's
    resources are refused here before any backend applies them.
    """
    if resources.memory_swap_limit_in_bytes < 0:
        raise InvalidArgument(f"{where}.memory_swap_limit_in_bytes: must not be negative")


def validate_container(config: ContainerConfig) -> None:
    """Checks that need no sandbox; raises InvalidArgument naming the field.

    Only what the edge (``cri/limits.py``, each value alone and only when set) cannot
    say: fields that must be set, rules across fields, and paths that must not reach
    /proc or /sys.
    """
    if not config.metadata.name:
        raise InvalidArgument("config.metadata.name: must not be empty")
    if not config.image:
        raise InvalidArgument("config.image.image: must not be empty")
    validate_resources(config.resources, "config.linux.resources")
    sec = config.security
    if sec.run_as_group is not None and sec.run_as_user is None and not sec.run_as_username:
        raise InvalidArgument(
            "config.linux.security_context.run_as_group: needs run_as_user or run_as_username"
        )
    for i, mount in enumerate(config.mounts):
        path = mount.container_path
        if not path.startswith("/"):
            raise InvalidArgument(f"config.mounts[{i}].container_path: must be absolute")
        normalized = os.path.normpath(path)
        if normalized in ("/proc", "/sys") or normalized.startswith(("/proc/", "/sys/")):
            raise InvalidArgument(
                f"config.mounts[{i}].container_path {path!r}: mounts into /proc or /sys "
                "are not allowed"
            )
        if not mount.host_path and not mount.image:
            raise InvalidArgument(f"config.mounts[{i}].host_path: must not be empty")
        if mount.image:
            check_sub_path(mount.image_sub_path, i)
        elif mount.image_sub_path:
            raise InvalidArgument(f"config.mounts[{i}].image_sub_path: needs image to be set")
