"""Stats and metrics RPCs of containers and pods (and their Stream forms)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.cri.rpc_common import Ctx, Rpcs, chunks
from vmcri.runtime import metric_families, metrics
from vmcri.runtime.containers import ContainerFilter
from vmcri.runtime.pods import SandboxFilter
from vmcri.store.records import SandboxRecord


class StatsRpcs(Rpcs):
    def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Ctx
    ) -> pb.ContainerStatsResponse:
        record, usage = self._containers.usage(request.container_id)
        return pb.ContainerStatsResponse(stats=convert.container_stats(record, usage))

    def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Ctx
    ) -> pb.ListContainerStatsResponse:
        f = request.filter
        filt = ContainerFilter(
            id=f.id, sandbox_id=f.pod_sandbox_id, labels=tuple(f.label_selector.items())
        )
        stats = []
        for record in self._containers.list(filt):
            _, usage = self._containers.usage(record.id, best_effort=True)
            stats.append(convert.container_stats(record, usage))
        return pb.ListContainerStatsResponse(stats=stats)

    def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: Ctx
    ) -> Iterator[pb.StreamContainerStatsResponse]:
        stats = self.ListContainerStats(
            pb.ListContainerStatsRequest(filter=request.filter), context
        ).stats
        for chunk in chunks(stats):
            yield pb.StreamContainerStatsResponse(container_stats=chunk)

    def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: Ctx
    ) -> pb.PodSandboxStatsResponse:
        record = self._pods.status(request.pod_sandbox_id)
        return pb.PodSandboxStatsResponse(stats=self._pod_stats(record))

    def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Ctx
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        filt = SandboxFilter(id=f.id, labels=tuple(f.label_selector.items()))
        return pb.ListPodSandboxStatsResponse(
            stats=[self._pod_stats(s) for s in self._pods.list(filt)]
        )

    def StreamPodSandboxStats(
        self, request: pb.StreamPodSandboxStatsRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxStatsResponse]:
        stats = self.ListPodSandboxStats(
            pb.ListPodSandboxStatsRequest(filter=request.filter), context
        ).stats
        for chunk in chunks(stats):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)

    def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: Ctx
    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(
            descriptors=[convert.metric_descriptor(d) for d in metric_families.ALL_DESCRIPTORS]
        )

    def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: Ctx
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=self._pod_metrics())

    def StreamPodSandboxMetrics(
        self, request: pb.StreamPodSandboxMetricsRequest, context: Ctx
    ) -> Iterator[pb.StreamPodSandboxMetricsResponse]:
        for chunk in chunks(self._pod_metrics()):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)

    def _pod_metrics(self) -> list[pb.PodSandboxMetrics]:
        return [
            convert.pod_sandbox_metrics(
                metrics.pod_metrics(
                    sandbox,
                    (
                        self._containers.usage(c.id, best_effort=True)
                        for c in self._containers.of_sandbox(sandbox.id)
                    ),
                    self._pods.network_usage(sandbox),
                    time.time_ns(),
                )
            )
            for sandbox in self._pods.list()
        ]

    def _pod_stats(self, record: SandboxRecord) -> pb.PodSandboxStats:
        samples = [
            self._containers.usage(c.id, best_effort=True)
            for c in self._containers.of_sandbox(record.id)
        ]
        return convert.pod_sandbox_stats(record, samples)
