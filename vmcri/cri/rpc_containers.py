"""Container RPCs: lifecycle, status, list, resources, logs, ExecSync, events."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.cri.rpc_common import Ctx, Rpcs, chunks, deadline_of, verbose_info


class ContainerRpcs(Rpcs):
    def CreateContainer(
        self, request: pb.CreateContainerRequest, context: Ctx
    ) -> pb.CreateContainerResponse:
        container_id = self._containers.create(
            request.pod_sandbox_id, convert.container_config(request.config)
        )
        return pb.CreateContainerResponse(container_id=container_id)

    def StartContainer(
        self, request: pb.StartContainerRequest, context: Ctx
    ) -> pb.StartContainerResponse:
        self._containers.start(request.container_id)
        return pb.StartContainerResponse()

    def StopContainer(
        self, request: pb.StopContainerRequest, context: Ctx
    ) -> pb.StopContainerResponse:
        self._containers.stop(request.container_id, request.timeout, deadline_of(context))
        return pb.StopContainerResponse()

    def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: Ctx
    ) -> pb.RemoveContainerResponse:
        self._containers.remove(request.container_id)
        return pb.RemoveContainerResponse()

    def ListContainers(
        self, request: pb.ListContainersRequest, context: Ctx
    ) -> pb.ListContainersResponse:
        filt = convert.container_filter(request.filter) if request.HasField("filter") else None
        return pb.ListContainersResponse(
            containers=[convert.container(c) for c in self._containers.list(filt)]
        )

    def StreamContainers(
        self, request: pb.StreamContainersRequest, context: Ctx
    ) -> Iterator[pb.StreamContainersResponse]:
        items = self.ListContainers(
            pb.ListContainersRequest(filter=request.filter), context
        ).containers
        for chunk in chunks(items):
            yield pb.StreamContainersResponse(containers=chunk)

    def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: Ctx
    ) -> pb.ContainerStatusResponse:
        record = self._containers.status(request.container_id)
        response = pb.ContainerStatusResponse(status=convert.container_status(record))
        if request.verbose:
            response.info.update(verbose_info(record))
        return response

    def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Ctx
    ) -> pb.UpdateContainerResourcesResponse:
        self._containers.update_resources(request.container_id, convert.resources(request.linux))
        return pb.UpdateContainerResourcesResponse()

    def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Ctx
    ) -> pb.ReopenContainerLogResponse:
        self._containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    def ExecSync(self, request: pb.ExecSyncRequest, context: Ctx) -> pb.ExecSyncResponse:
        result = self._containers.exec_sync(
            request.container_id, list(request.cmd), int(request.timeout)
        )
        return pb.ExecSyncResponse(
            stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
        )

    def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: Ctx
    ) -> Iterator[pb.ContainerEventResponse]:
        done = threading.Event()
        context.add_callback(done.set)
        for event in self._events.subscribe(done):
            response = pb.ContainerEventResponse(
                container_id=event.container_id,
                container_event_type=event.type.value,  # type: ignore[arg-type]
                created_at=event.created_at,
            )
            sandbox = self._pods.find(event.sandbox_id)
            if sandbox is not None:
                response.pod_sandbox_status.CopyFrom(convert.pod_sandbox_status(sandbox))
                response.containers_statuses.extend(
                    convert.container_status(c) for c in self._containers.of_sandbox(sandbox.id)
                )
            yield response

    # ------------------------------------------------------------ streaming (vmcri.streaming)
