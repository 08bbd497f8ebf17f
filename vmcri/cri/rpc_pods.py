"""Pod sandbox RPCs: run, stop, remove, status, list, resources."""

from __future__ import annotations

from collections.abc import Iterator

from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.cri.rpc_common import Ctx, Rpcs, chunks, verbose_info


class PodRpcs(Rpcs):
    def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: Ctx
    ) -> pb.RunPodSandboxResponse:
        sandbox_id = self._pods.run(convert.pod_config(request.config), request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: Ctx
    ) -> pb.StopPodSandboxResponse:
        self._pods.stop(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: Ctx
    ) -> pb.RemovePodSandboxResponse:
        self._pods.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: Ctx
    ) -> pb.PodSandboxStatusResponse:
        record = self._pods.status(request.pod_sandbox_id)
        response = pb.PodSandboxStatusResponse(status=convert.pod_sandbox_status(record))
        if request.verbose:
            response.info.update(verbose_info(record))
        response.containers_statuses.extend(
            convert.container_status(c) for c in self._containers.of_sandbox(record.id)
        )
        return response

    def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: Ctx
    ) -> pb.ListPodSandboxResponse:
        filt = convert.sandbox_filter(request.filter) if request.HasField("filter") else None
        return pb.ListPodSandboxResponse(
            items=[convert.pod_sandbox(s) for s in self._pods.list(filt)]
        )

    def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxesResponse]:
        items = self.ListPodSandbox(pb.ListPodSandboxRequest(filter=request.filter), context).items
        for chunk in chunks(items):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=chunk)

    def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: Ctx
    ) -> pb.UpdatePodSandboxResourcesResponse:
        self._pods.update_resources(
            request.pod_sandbox_id,
            convert.resources(request.overhead) if request.HasField("overhead") else None,
            convert.resources(request.resources) if request.HasField("resources") else None,
        )
        return pb.UpdatePodSandboxResourcesResponse()

    # ------------------------------------------------------------ containers
