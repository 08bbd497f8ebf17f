"""Checkpoint RPCs: CheckpointPod, RestorePod (KEP-5823) and CheckpointContainer (KEP-2008).

Each is bounded by the call's deadline (the CRI has no timeout field for the pod
RPCs; CheckpointContainer's ``timeout`` tightens the deadline when it is sooner).
"""

from __future__ import annotations

import time

from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.cri.rpc_common import Ctx, Rpcs, deadline_of
from vmcri.errors import InvalidArgument
from vmcri.model import ContainerConfig
from vmcri.runtime.checkpoints.checkpoint_container import ContainerCheckpointRequest
from vmcri.runtime.checkpoints.checkpoint_pod import PodCheckpointRequest, PostCheckpointState
from vmcri.runtime.checkpoints.restore_pod import PodRestoreRequest

_POST_STATE = {
    pb.POST_CHECKPOINT_STATE_RUNNING: PostCheckpointState.RUNNING,
    pb.POST_CHECKPOINT_STATE_STOPPED: PostCheckpointState.STOPPED,
}


class CheckpointRpcs(Rpcs):
    def CheckpointPod(
        self, request: pb.CheckpointPodRequest, context: Ctx
    ) -> pb.CheckpointPodResponse:
        self._checkpoints.checkpoint_pod(
            PodCheckpointRequest(
                pod_sandbox_id=request.pod_sandbox_id,
                path=request.path,
                options=dict(request.options),
                post_state=_POST_STATE[request.post_checkpoint_state],
            ),
            deadline_of(context),
        )
        return pb.CheckpointPodResponse()

    def RestorePod(self, request: pb.RestorePodRequest, context: Ctx) -> pb.RestorePodResponse:
        sandbox_id = self._checkpoints.restore_pod(
            PodRestoreRequest(
                path=request.path,
                config=convert.pod_config(request.config),
                options=dict(request.options),
                container_configs=[
                    _container_config(c, i) for i, c in enumerate(request.container_configs)
                ],
            ),
            deadline_of(context),
        )
        return pb.RestorePodResponse(pod_sandbox_id=sandbox_id)

    def CheckpointContainer(
        self, request: pb.CheckpointContainerRequest, context: Ctx
    ) -> pb.CheckpointContainerResponse:
        deadline = deadline_of(context)
        if request.timeout > 0:
            own = time.monotonic() + request.timeout
            deadline = own if deadline is None else min(deadline, own)
        self._checkpoints.checkpoint_container(
            ContainerCheckpointRequest(request.container_id, request.location), deadline
        )
        return pb.CheckpointContainerResponse()


def _container_config(msg: pb.ContainerConfig, i: int) -> ContainerConfig:
    """kubelet's config of one container; a refusal names ``container_configs[i]``."""
    try:
        return convert.container_config(msg)
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"container_configs[{i}].{exc.message.removeprefix('config.')}"
        ) from exc
