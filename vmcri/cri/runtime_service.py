"""The CRI RuntimeService servicer: thin methods that decode, call a service, encode.

RPCs vmcri does not implement fall through to the generated base class, whose
NotImplementedError the error interceptor turns into UNIMPLEMENTED with the name.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.cri import convert
from vmcri.runtime import metrics
from vmcri.runtime.info import CRI_API_VERSION, KUBELET_API_VERSION, RUNTIME_NAME
from vmcri.runtime.pods import SandboxFilter
from vmcri.store.codec import to_jsonable
from vmcri.store.records import SandboxRecord

if TYPE_CHECKING:
    from vmcri.daemon import Daemon

Ctx = grpc.ServicerContext
T = TypeVar("T")

# Items per message of the Stream* forms of the list RPCs: far below gRPC's
# 4 MiB default message limit even for containers with large label sets.
STREAM_CHUNK = 256


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """The list in pieces of STREAM_CHUNK; an empty list is one empty piece, so the
    client always gets one answer, as the unary form would give."""
    size = STREAM_CHUNK
    if not items:
        yield items
        return
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _verbose_info(value: Any) -> dict[str, str]:
    return {"info": json.dumps(to_jsonable(value))}


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    # ------------------------------------------------------------ runtime info

    def Version(self, request: pb.VersionRequest, context: Ctx) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=self._d.info.version(),
            runtime_api_version=CRI_API_VERSION,
        )

    def Status(self, request: pb.StatusRequest, context: Ctx) -> pb.StatusResponse:
        status = self._d.info.status()
        response = pb.StatusResponse(
            status=pb.RuntimeStatus(
                conditions=[
                    pb.RuntimeCondition(
                        type=c.type, status=c.status, reason=c.reason, message=c.message
                    )
                    for c in status.conditions
                ]
            ),
            runtime_handlers=[
                pb.RuntimeHandler(
                    name=h.name,
                    features=pb.RuntimeHandlerFeatures(
                        recursive_read_only_mounts=h.features.recursive_read_only_mounts,
                        user_namespaces=h.features.user_namespaces,
                    ),
                )
                for h in status.handlers
            ],
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )
        if request.verbose:
            response.info["config"] = json.dumps(to_jsonable(self._d.config))
        return response

    def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: Ctx
    ) -> pb.RuntimeConfigResponse:
        driver = pb.SYSTEMD if self._d.info.cgroup_driver() == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Ctx
    ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            self._d.info.update_pod_cidr(cidr)
        return pb.UpdateRuntimeConfigResponse()

    # ------------------------------------------------------------ pod sandboxes

    def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: Ctx
    ) -> pb.RunPodSandboxResponse:
        sandbox_id = self._d.pods.run(convert.pod_config(request.config), request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: Ctx
    ) -> pb.StopPodSandboxResponse:
        self._d.pods.stop(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: Ctx
    ) -> pb.RemovePodSandboxResponse:
        self._d.pods.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: Ctx
    ) -> pb.PodSandboxStatusResponse:
        record = self._d.pods.status(request.pod_sandbox_id)
        response = pb.PodSandboxStatusResponse(status=convert.pod_sandbox_status(record))
        if request.verbose:
            response.info.update(_verbose_info(record))
        response.containers_statuses.extend(
            convert.container_status(c) for c in self._d.services.store.containers_of(record.id)
        )
        return response

    def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: Ctx
    ) -> pb.ListPodSandboxResponse:
        filt = convert.sandbox_filter(request.filter) if request.HasField("filter") else None
        return pb.ListPodSandboxResponse(
            items=[convert.pod_sandbox(s) for s in self._d.pods.list(filt)]
        )

    def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxesResponse]:
        items = self.ListPodSandbox(pb.ListPodSandboxRequest(filter=request.filter), context).items
        for chunk in _chunks(items):
            yield pb.StreamPodSandboxesResponse(pod_sandboxes=chunk)

    def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: Ctx
    ) -> pb.UpdatePodSandboxResourcesResponse:
        self._d.pods.update_resources(
            request.pod_sandbox_id,
            convert.resources(request.overhead) if request.HasField("overhead") else None,
            convert.resources(request.resources) if request.HasField("resources") else None,
        )
        return pb.UpdatePodSandboxResourcesResponse()

    # ------------------------------------------------------------ containers

    def CreateContainer(
        self, request: pb.CreateContainerRequest, context: Ctx
    ) -> pb.CreateContainerResponse:
        container_id = self._d.containers.create(
            request.pod_sandbox_id, convert.container_config(request.config)
        )
        return pb.CreateContainerResponse(container_id=container_id)

    def StartContainer(
        self, request: pb.StartContainerRequest, context: Ctx
    ) -> pb.StartContainerResponse:
        self._d.containers.start(request.container_id)
        return pb.StartContainerResponse()

    def StopContainer(
        self, request: pb.StopContainerRequest, context: Ctx
    ) -> pb.StopContainerResponse:
        self._d.containers.stop(request.container_id, request.timeout)
        return pb.StopContainerResponse()

    def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: Ctx
    ) -> pb.RemoveContainerResponse:
        self._d.containers.remove(request.container_id)
        return pb.RemoveContainerResponse()

    def ListContainers(
        self, request: pb.ListContainersRequest, context: Ctx
    ) -> pb.ListContainersResponse:
        filt = convert.container_filter(request.filter) if request.HasField("filter") else None
        return pb.ListContainersResponse(
            containers=[convert.container(c) for c in self._d.containers.list(filt)]
        )

    def StreamContainers(
        self, request: pb.StreamContainersRequest, context: Ctx
    ) -> Iterator[pb.StreamContainersResponse]:
        items = self.ListContainers(
            pb.ListContainersRequest(filter=request.filter), context
        ).containers
        for chunk in _chunks(items):
            yield pb.StreamContainersResponse(containers=chunk)

    def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: Ctx
    ) -> pb.ContainerStatusResponse:
        record = self._d.containers.status(request.container_id)
        response = pb.ContainerStatusResponse(status=convert.container_status(record))
        if request.verbose:
            response.info.update(_verbose_info(record))
        return response

    def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Ctx
    ) -> pb.UpdateContainerResourcesResponse:
        self._d.containers.update_resources(request.container_id, convert.resources(request.linux))
        return pb.UpdateContainerResourcesResponse()

    def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Ctx
    ) -> pb.ReopenContainerLogResponse:
        self._d.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    def ExecSync(self, request: pb.ExecSyncRequest, context: Ctx) -> pb.ExecSyncResponse:
        result = self._d.containers.exec_sync(
            request.container_id, list(request.cmd), int(request.timeout)
        )
        return pb.ExecSyncResponse(
            stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
        )

    def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Ctx
    ) -> pb.ContainerStatsResponse:
        record, usage = self._d.containers.usage(request.container_id)
        return pb.ContainerStatsResponse(stats=convert.container_stats(record, usage))

    def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Ctx
    ) -> pb.ListContainerStatsResponse:
        f = request.filter
        stats = []
        for record in self._d.containers.list():
            if f.id and not record.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not record.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            if any(record.config.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            _, usage = self._d.containers.usage(record.id, best_effort=True)
            stats.append(convert.container_stats(record, usage))
        return pb.ListContainerStatsResponse(stats=stats)

    def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: Ctx
    ) -> Iterator[pb.StreamContainerStatsResponse]:
        stats = self.ListContainerStats(
            pb.ListContainerStatsRequest(filter=request.filter), context
        ).stats
        for chunk in _chunks(stats):
            yield pb.StreamContainerStatsResponse(container_stats=chunk)

    def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: Ctx
    ) -> pb.PodSandboxStatsResponse:
        record = self._d.pods.status(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=self._pod_stats(record))

    def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Ctx
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        filt = SandboxFilter(id=f.id, labels=tuple(f.label_selector.items()))
        return pb.ListPodSandboxStatsResponse(
            stats=[self._pod_stats(s) for s in self._d.pods.list(filt)]
        )

    def StreamPodSandboxStats(
        self, request: pb.StreamPodSandboxStatsRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxStatsResponse]:
        stats = self.ListPodSandboxStats(
            pb.ListPodSandboxStatsRequest(filter=request.filter), context
        ).stats
        for chunk in _chunks(stats):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)

    def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: Ctx
    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(
            descriptors=[convert.metric_descriptor(d) for d in metrics.DESCRIPTORS]
        )

    def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: Ctx
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=self._pod_metrics())

    def StreamPodSandboxMetrics(
        self, request: pb.StreamPodSandboxMetricsRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxMetricsResponse]:
        for chunk in _chunks(self._pod_metrics()):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)

    def _pod_metrics(self) -> list[pb.PodSandboxMetrics]:
        return [
            convert.pod_sandbox_metrics(
                metrics.pod_metrics(
                    sandbox,
                    (
                        self._d.containers.usage(c.id, best_effort=True)
                        for c in self._d.services.store.containers_of(sandbox.id)
                    ),
                )
            )
            for sandbox in self._d.pods.list()
        ]

    def _pod_stats(self, record: SandboxRecord) -> pb.PodSandboxStats:
        samples = [
            self._d.containers.usage(c.id, best_effort=True)
            for c in self._d.services.store.containers_of(record.id)
        ]
        return convert.pod_sandbox_stats(record, samples)

    def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: Ctx
    ) -> Iterator[pb.ContainerEventResponse]:
        done = threading.Event()
        context.add_callback(done.set)
        for event in self._d.services.events.subscribe(done):
            response = pb.ContainerEventResponse(
                container_id=event.container_id,
                container_event_type=event.type.value,  # type: ignore[arg-type]
                created_at=event.created_at,
            )
            sandbox = self._d.services.store.sandboxes.find(event.sandbox_id)
            if sandbox is not None:
                response.pod_sandbox_status.CopyFrom(convert.pod_sandbox_status(sandbox))
                response.containers_statuses.extend(
                    convert.container_status(c)
                    for c in self._d.services.store.containers_of(sandbox.id)
                )
            yield response

    # ------------------------------------------------------------ streaming (vmcri.streaming)

    def Exec(self, request: pb.ExecRequest, context: Ctx) -> pb.ExecResponse:
        from vmcri.streaming.requests import ExecRequest

        url = self._d.streaming_service().exec_url(
            ExecRequest(
                container_id=request.container_id,
                cmd=tuple(request.cmd),
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        )
        return pb.ExecResponse(url=url)

    def Attach(self, request: pb.AttachRequest, context: Ctx) -> pb.AttachResponse:
        from vmcri.streaming.requests import AttachRequest

        url = self._d.streaming_service().attach_url(
            AttachRequest(
                container_id=request.container_id,
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        )
        return pb.AttachResponse(url=url)

    def PortForward(self, request: pb.PortForwardRequest, context: Ctx) -> pb.PortForwardResponse:
        from vmcri.streaming.requests import PortForwardRequest

        url = self._d.streaming_service().port_forward_url(
            PortForwardRequest(sandbox_id=request.pod_sandbox_id, ports=tuple(request.port))
        )
        return pb.PortForwardResponse(url=url)
