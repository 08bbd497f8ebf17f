"""The checkpoint service the CRI edge calls: CheckpointPod, RestorePod, CheckpointContainer."""

from __future__ import annotations

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.in_flight import InFlight
from vmcri.runtime.checkpoints.checkpoint_container import (
    ContainerCheckpointRequest,
    checkpoint_container,
)
from vmcri.runtime.checkpoints.checkpoint_pod import (
    PodCheckpointRequest,
    PostCheckpointState,
    checkpoint_pod,
)
from vmcri.runtime.checkpoints.restore_pod import PodRestoreRequest, restore_pod
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.runtime.pods import PodService


class CheckpointService:
    def __init__(self, services: Services, pods: PodService, containers: ContainerService) -> None:
        self._s = services
        self._pods = pods
        self._containers = containers
        self._in_flight = InFlight()

    def checkpoint_pod(self, request: PodCheckpointRequest, deadline: float | None) -> None:
        """See :func:`vmcri.runtime.checkpoints.checkpoint_pod.checkpoint_pod`; a STOPPED request
        stops the pod once its checkpoint is complete, as StopPodSandbox would."""
        sandbox_id = checkpoint_pod(self._s, request, Deadline.of(deadline), self._in_flight)
        if request.post_state is PostCheckpointState.STOPPED:
            self._pods.stop(sandbox_id)

    def restore_pod(self, request: PodRestoreRequest, deadline: float | None) -> str:
        return restore_pod(self._s, self._pods, self._containers, request, Deadline.of(deadline))

    def checkpoint_container(
        self, request: ContainerCheckpointRequest, deadline: float | None
    ) -> None:
        checkpoint_container(self._s, request, Deadline.of(deadline), self._in_flight)
