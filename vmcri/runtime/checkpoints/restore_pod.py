"""RestorePod: a new sandbox from a verified checkpoint, its containers RUNNING.

The checkpoint is verified whole (manifest, every checksum) before anything else; then
its handler must be configured here and able to restore it; then kubelet's container
configs are bound to the checkpoint's containers by name, one each, none missing and
none extra. Only then is a sandbox made, with kubelet's new config (new UID, cgroup
parent, log directory; CNI gives the new IP), brought up by the handler from the saved
state instead of booted; each container is created from its new config (its log in the
new log directory, starting with the old log's newest part) and made to run from its
saved state, its restart count carried over. Any failure removes the new sandbox and its
containers again: nothing is left.

NRI plugins see what containerd's restore shows them: the pod's RunPodSandbox, and for
each container CreateContainer, PostCreateContainer, StartContainer (a refusal fails the
restore: the pod goes again) and PostStartContainer. A handler whose checkpointer keeps
container IDs (the VM's: its guest knows its containers by them) brings each container
back under its saved ID, so such a pod cannot be restored on the node where its
containers still are. A CreateContainer adjustment
may change only what holds for a restored process (annotations, resources); any other
field fails the restore naming it (vmcri.nri.adjust.refuse_for_restore).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.logs import continue_log
from vmcri.checkpoint.manifest import Manifest, SavedContainer
from vmcri.checkpoint.options import check_options
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.reader import VerifiedCheckpoint, verify
from vmcri.errors import FailedPrecondition, InvalidArgument, NotFound
from vmcri.handlers.checkpointer import PodCheckpointer, RestoredContainer, refuse
from vmcri.images.auth import Deadline as PullDeadline
from vmcri.model import ContainerConfig, ImageInfo, PodConfig
from vmcri.runtime.containers import ContainerService, Restoring
from vmcri.runtime.context import Services
from vmcri.runtime.events import ContainerEvent, EventType
from vmcri.runtime.pods import PodService
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord

log = logging.getLogger(__name__)

RESTART_COUNT_ANNOTATION = "io.kubernetes.container.restartCount"
"""Where kubelet reads a container's restart count back from its status."""


@dataclass(frozen=True)
class PodRestoreRequest:
    path: str
    config: PodConfig
    options: Mapping[str, str]
    container_configs: Sequence[ContainerConfig]


def restore_pod(
    services: Services,
    pods: PodService,
    containers: ContainerService,
    request: PodRestoreRequest,
    deadline: Deadline,
) -> str:
    """The new sandbox's ID. Raises InvalidArgument (path, a checkpoint that does not
    verify, container_configs that do not match it, options), FailedPrecondition or
    Unimplemented (its handler cannot restore it here), DeadlineExceeded, and whatever
    the sandbox's creation raises; nothing of a failed restore remains."""
    check_options(request.options)
    parent_fd = open_directory(request.path, "path")
    try:
        source = verify(parent_fd, request.path, deadline)
    finally:
        os.close(parent_fd)
    try:
        return _restore(services, pods, containers, request, source, deadline)
    finally:
        source.close()


def _restore(
    services: Services,
    pods: PodService,
    containers: ContainerService,
    request: PodRestoreRequest,
    source: VerifiedCheckpoint,
    deadline: Deadline,
) -> str:
    manifest = source.manifest
    try:
        handler = services.handlers.resolve(manifest.handler)
    except NotFound as exc:
        raise FailedPrecondition(
            f"path: the checkpoint was taken with runtime handler {manifest.handler!r}, "
            "which is not configured on this node"
        ) from exc
    if handler.backend_name != manifest.backend:
        raise FailedPrecondition(
            f"path: the checkpoint is of a {manifest.backend!r} pod; handler "
            f"{handler.name!r} here runs {handler.backend_name!r} pods"
        )
    checkpointer = handler.checkpointer
    refusal = checkpointer.restorable(manifest)
    if refusal is not None:
        raise refuse(refusal, f"path: checkpoint of handler {handler.name!r}")
    bound = bind_configs(manifest, request.container_configs)
    if checkpointer.keeps_container_ids:
        here = [s.name for s in manifest.containers if services.store.containers.find(s.id)]
        if here:
            raise FailedPrecondition(
                f"path: container {here[0]!r} of the checkpoint is still on this node under "
                "its ID, which a restored VM pod keeps: remove the checkpointed pod first, "
                "or restore it on another node"
            )
    deadline.check("verifying the checkpoint")
    namespace = request.config.metadata.namespace
    images = [_image_here(services, c.image, namespace, deadline) for _, c in bound]
    sandbox_id = pods.run(
        request.config,
        handler.name,
        start=lambda record: checkpointer.restore_sandbox(record, source, deadline, images),
    )
    try:
        for saved, config in bound:
            deadline.check(f"restoring container {saved.name}")
            config = _carry_restart_count(config, saved)
            kept = saved.id if checkpointer.keeps_container_ids else ""
            bring_back = _bring_back(checkpointer, saved, source, deadline)
            with services.nri.restoring():
                container_id = containers.create(
                    sandbox_id, config, restored=Restoring(kept, bring_back)
                )
            sandbox = services.store.sandboxes.get(sandbox_id)
            # A plugin's refusal still fails the restore (the whole pod goes again).
            services.nri.start_container(sandbox, services.store.containers.get(container_id))
            services.nri.post_start_container(sandbox, _mark_running(services, container_id))
    except BaseException as exc:
        log.info("restore into sandbox %s failed, removing it: %s", sandbox_id, exc)
        pods.remove(sandbox_id)
        raise
    log.info("sandbox %s: restored from %s (was %s)", sandbox_id, request.path, manifest.pod_id)
    return sandbox_id


def bind_configs(
    manifest: Manifest, configs: Sequence[ContainerConfig]
) -> list[tuple[SavedContainer, ContainerConfig]]:
    """Each saved container with kubelet's config of the same name, in checkpoint order.

    Raises InvalidArgument naming ``container_configs`` when one is missing, repeated, or
    names a container the checkpoint does not hold.
    """
    by_name: dict[str, ContainerConfig] = {}
    saved_names = {saved.name for saved in manifest.containers}
    for i, config in enumerate(configs):
        name = config.metadata.name
        if name in by_name:
            raise InvalidArgument(f"container_configs[{i}]: container {name!r} is given twice")
        if name not in saved_names:
            raise InvalidArgument(
                f"container_configs[{i}]: the checkpoint holds no container {name!r}"
            )
        by_name[name] = config
    missing = [saved.name for saved in manifest.containers if saved.name not in by_name]
    if missing:
        raise InvalidArgument(
            f"container_configs: no config for the checkpoint's container {missing[0]!r}"
        )
    return [(saved, by_name[saved.name]) for saved in manifest.containers]


def _carry_restart_count(config: ContainerConfig, saved: SavedContainer) -> ContainerConfig:
    """kubelet reads a container's restart count from this annotation of its status; its
    metadata.attempt stays kubelet's (kubelet names the new pod's containers by it)."""
    annotations = {**config.annotations, RESTART_COUNT_ANNOTATION: str(saved.restart_count)}
    return dataclasses.replace(config, annotations=annotations)


def _image_here(services: Services, ref: str, namespace: str, deadline: Deadline) -> ImageInfo:
    """The image a container config names, pulled first (without credentials) when this
    node does not have it: a checkpoint restored on another node finds its images there.
    Raises like ``ImageService.pull`` and ``image_for_container``."""
    try:
        return services.images.image_for_container(ref, namespace)
    except NotFound:
        log.info("restore: image %s is not here, pulling it", ref)
    services.images.pull(ref, deadline=PullDeadline(deadline.at), namespace=namespace)
    return services.images.image_for_container(ref, namespace)


def _bring_back(
    checkpointer: PodCheckpointer,
    saved: SavedContainer,
    source: VerifiedCheckpoint,
    deadline: Deadline,
) -> Callable[[SandboxRecord, ContainerRecord], RestoredContainer]:
    """What brings ``saved`` back as its new record, in place of the backend's create:
    its log's newest part first in the new log, then the handler's restore."""

    def bring_back(sandbox: SandboxRecord, record: ContainerRecord) -> RestoredContainer:
        if saved.log_file:
            continue_log(record.log_path, source.read(saved.log_file))
        return checkpointer.restore_container(sandbox, record, saved, source, deadline)

    return bring_back


def _mark_running(services: Services, container_id: str) -> ContainerRecord:
    """RUNNING with the pid its restore gave it (``ContainerService.create``)."""
    now = services.clock()

    def running(record: ContainerRecord) -> ContainerRecord:
        if record.state is ContainerState.CREATED:
            return dataclasses.replace(record, state=ContainerState.RUNNING, started_at=now)
        return record

    record = services.store.containers.update(container_id, running)
    if record.state is not ContainerState.RUNNING:
        raise FailedPrecondition(
            f"container {record.config.metadata.name}: {record.state.value} after its restore"
        )
    services.events.publish(
        ContainerEvent(record.id, record.sandbox_id, EventType.STARTED, services.clock())
    )
    return record
