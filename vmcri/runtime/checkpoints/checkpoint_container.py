"""CheckpointContainer (kubelet's forensic checkpoint, KEP-2008): a tar archive at
``location``, the container left running.

The archive holds what a pod checkpoint holds, since a container's state is its pod's
(a VM pod's memory is one image; CRIU dumps a container with its pod's namespaces):

    container.json      the container's CRI config, image and state (vmcri's record)
    container.log       its CRI log as it is now (the newest 16 MiB: logs.MAX_LOG_BYTES)
    pod/manifest.json   the pod checkpoint's manifest (restorable with RestorePod)
    pod/<file>          every file that manifest lists

The pod checkpoint is written into a hidden directory beside ``location`` (the kubelet's
checkpoints directory: nowhere else) and removed once archived; the archive is created
``O_EXCL | O_NOFOLLOW``, 0600, and removed again on any failure.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.in_flight import InFlight
from vmcri.checkpoint.logs import log_tail
from vmcri.checkpoint.paths import SUBDIR, split_location
from vmcri.checkpoint.writer import remove_tree
from vmcri.errors import FailedPrecondition, InvalidArgument, NotFound
from vmcri.handlers.checkpointer import refuse
from vmcri.ids import new_id
from vmcri.runtime.checkpoints.checkpoint_pod import (
    PodCheckpointRequest,
    checkpoint_pod,
    live_containers,
)
from vmcri.runtime.context import Services
from vmcri.store.codec import to_jsonable
from vmcri.store.records import ContainerState


@dataclass(frozen=True)
class ContainerCheckpointRequest:
    container_id: str
    location: str


def checkpoint_container(
    services: Services, request: ContainerCheckpointRequest, deadline: Deadline, in_flight: InFlight
) -> None:
    """Raises NotFound, InvalidArgument (location), FailedPrecondition (not running, the
    archive exists), Unimplemented (the handler cannot), DeadlineExceeded."""
    container = services.store.containers.find(request.container_id)
    if container is None:
        raise NotFound(f"container_id {request.container_id!r}: no such container")
    if container.state is not ContainerState.RUNNING:
        raise FailedPrecondition(
            f"container_id {container.id}: container is {container.state.value}, not RUNNING"
        )
    sandbox = services.store.sandboxes.get(container.sandbox_id)
    handler = services.handlers.resolve(sandbox.handler)
    refusal = handler.checkpointer.refusal(sandbox, live_containers(services, sandbox.id))
    if refusal is not None:
        raise refuse(refusal, f"container {container.id} (handler {handler.name!r})")
    parent_fd, name = split_location(request.location, "location")
    scratch = f".{name}.{new_id()[:12]}"
    try:
        os.mkdir(scratch, 0o700, dir_fd=parent_fd)
        scratch_path = f"{request.location.rpartition('/')[0] or ''}/{scratch}"
        checkpoint_pod(
            services, PodCheckpointRequest(sandbox.id, scratch_path, {}), deadline, in_flight
        )
        deadline.check("writing the container checkpoint archive")
        _archive(parent_fd, name, scratch, container_json(container), container.log_path)
    finally:
        remove_tree(parent_fd, scratch)
        os.close(parent_fd)


def container_json(container: object) -> bytes:
    return json.dumps(to_jsonable(container), sort_keys=True, indent=1).encode()


def _archive(parent_fd: int, name: str, scratch: str, record: bytes, log_path: str) -> None:
    try:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=parent_fd,
        )
    except FileExistsError as exc:
        raise FailedPrecondition(f"location: {name!r} already exists") from exc
    except OSError as exc:
        raise InvalidArgument(f"location: {name!r} cannot be created: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            _add(tar, "container.json", record)
            _add(tar, "container.log", log_tail(log_path))
            pod_fd = os.open(
                f"{scratch}/{SUBDIR}",
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                dir_fd=parent_fd,
            )
            try:
                for entry in sorted(os.listdir(pod_fd)):
                    file_fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pod_fd)
                    with os.fdopen(file_fd, "rb") as f:
                        info = tarfile.TarInfo(f"pod/{entry}")
                        info.size = os.fstat(f.fileno()).st_size
                        info.mode = 0o600
                        tar.addfile(info, f)
            finally:
                os.close(pod_fd)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(name, dir_fd=parent_fd)
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))
