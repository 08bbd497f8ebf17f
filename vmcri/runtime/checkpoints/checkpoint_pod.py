"""CheckpointPod: a pod's state and manifest into the kubelet's directory, or nothing.

Order, so that a refusal costs nothing and a failure leaves nothing: the pod must be
READY and its handler able to save it (refused before the directory is touched); the
directory is checked and vmcri's subdirectory made; the handler saves the state; the
manifest goes last. An error or the call's deadline at any step removes every file
written, and the handler leaves the pod running as it was. With
``POST_CHECKPOINT_STATE_STOPPED`` the pod is stopped once the checkpoint is complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from vmcri import __version__
from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.in_flight import InFlight
from vmcri.checkpoint.logs import log_tail
from vmcri.checkpoint.manifest import FORMAT, Manifest, SavedContainer
from vmcri.checkpoint.options import check_options
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import FailedPrecondition, NotFound
from vmcri.handlers.checkpointer import SavedState, refuse
from vmcri.handlers.registry import Handler
from vmcri.runtime.context import Services
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState

log = logging.getLogger(__name__)


class PostCheckpointState(Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class PodCheckpointRequest:
    pod_sandbox_id: str
    path: str
    options: Mapping[str, str]
    post_state: PostCheckpointState = PostCheckpointState.RUNNING


def checkpoint_pod(
    services: Services, request: PodCheckpointRequest, deadline: Deadline, in_flight: InFlight
) -> str:
    """Write the checkpoint; returns the sandbox ID. Raises NotFound, InvalidArgument
    (path, options), FailedPrecondition (pod not READY, a checkpoint already there, a
    handler's precondition), Unimplemented (the handler cannot), DeadlineExceeded."""
    check_options(request.options)
    sandbox = services.store.sandboxes.find(request.pod_sandbox_id)
    if sandbox is None:
        raise NotFound(f"pod_sandbox_id {request.pod_sandbox_id!r}: no such sandbox")
    if sandbox.state is not SandboxState.READY:
        raise FailedPrecondition(
            f"pod_sandbox_id {sandbox.id}: sandbox is {sandbox.state.value}, not READY"
        )
    handler = services.handlers.resolve(sandbox.handler)
    containers = live_containers(services, sandbox.id)
    refusal = handler.checkpointer.refusal(sandbox, containers)
    if refusal is not None:
        raise refuse(refusal, f"pod sandbox {sandbox.id} (handler {handler.name!r})")
    with in_flight.hold(sandbox.id):
        _write(services, handler, sandbox, containers, request.path, deadline)
    log.info("sandbox %s: checkpointed into %s", sandbox.id, request.path)
    return sandbox.id


def live_containers(services: Services, sandbox_id: str) -> list[ContainerRecord]:
    """The pod's containers a checkpoint holds: those that have not exited."""
    return [
        c for c in services.store.containers_of(sandbox_id) if c.state is not ContainerState.EXITED
    ]


def _write(
    services: Services,
    handler: Handler,
    sandbox: SandboxRecord,
    containers: list[ContainerRecord],
    path: str,
    deadline: Deadline,
) -> None:
    parent_fd = open_directory(path, "path")
    try:
        out = CheckpointWriter(parent_fd, path)
        try:
            deadline.check("starting the checkpoint")
            saved = handler.checkpointer.save(sandbox, containers, out, deadline)
            logs = _save_logs(containers, out)
            deadline.check("writing the checkpoint manifest")
            out.seal(_manifest(services, handler, sandbox, containers, saved, logs, out))
        except BaseException as exc:
            log.info("sandbox %s: checkpoint failed, removing it: %s", sandbox.id, exc)
            out.abort()
            raise
    finally:
        os.close(parent_fd)


def _manifest(
    services: Services,
    handler: Handler,
    sandbox: SandboxRecord,
    containers: list[ContainerRecord],
    saved: SavedState,
    logs: dict[str, str],
    out: CheckpointWriter,
) -> Manifest:
    return Manifest(
        format=FORMAT,
        vmcri_version=__version__,
        created_at=services.clock(),
        handler=handler.name,
        backend=handler.backend_name,
        guest_image_version=saved.guest_image_version,
        handler_facts=dict(saved.facts),
        pod_id=sandbox.id,
        pod_config=sandbox.config,
        pod_state=sandbox.state.name,
        network=sandbox.network,
        containers=tuple(
            SavedContainer(
                name=c.config.metadata.name,
                id=c.id,
                config=c.config,
                image_id=c.image_id,
                image_name=c.image_name,
                state=c.state.name,
                restart_count=_restart_count(c),
                started_at=c.started_at,
                facts=dict(saved.container_facts.get(c.id, {})),
                log_file=logs.get(c.id, ""),
            )
            for c in containers
        ),
        files=out.files(),
    )


def _save_logs(containers: list[ContainerRecord], out: CheckpointWriter) -> dict[str, str]:
    """Each container's log tail as ``log-<n>``; returns the file names by container ID."""
    names: dict[str, str] = {}
    for i, container in enumerate(containers):
        tail = log_tail(container.log_path)
        if tail:
            names[container.id] = out.write_bytes(f"log-{i}", tail).name
    return names


def _restart_count(container: ContainerRecord) -> int:
    """kubelet's count (its annotation), else the attempt number it names containers by."""
    value = container.config.annotations.get("io.kubernetes.container.restartCount", "")
    return int(value) if value.isdigit() and len(value) < 10 else container.config.metadata.attempt
