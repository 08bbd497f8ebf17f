"""Stats and metrics RPCs of containers and pods (and their Stream forms).

The list forms sample pods in parallel, each pod's wait bounded (vmcri.runtime.stats),
and convert each pod on its own: a pod whose numbers cannot be encoded is reported
without them, never failing the answer for the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.cri.rpc_common import Ctx, Rpcs, RuntimeServices, chunks
from vmcri.runtime import cri_metric_families, cri_metrics
from vmcri.runtime.containers import ContainerFilter
from vmcri.runtime.pods import SandboxFilter
from vmcri.runtime.stats import PodUsage, Sample, UsageSampler
from vmcri.store.records import ContainerRecord
from vmcri.supervisor.api import ContainerUsage

log = logging.getLogger(__name__)


class StatsRpcs(Rpcs):
    def __init__(self, services: RuntimeServices) -> None:
        super().__init__(services)
        self._sampler = UsageSampler(services.pods, services.containers)

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
        listed = self._containers.list(filt)
        by_pod: dict[str, list[ContainerRecord]] = {}
        for record in listed:
            by_pod.setdefault(record.sandbox_id, []).append(record)
        sandboxes = [s for s in self._pods.list() if s.id in by_pod]
        sampled = self._sampler.sample(sandboxes, lambda s: by_pod[s.id])
        found = {c.id: (c, u) for pod in sampled for c, u in pod.containers}
        stats = []
        for record in listed:  # a container whose pod record is gone: no numbers
            stats.append(_container_stats(*found.get(record.id, (record, None))))
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
        [pod] = self._sampler.sample([record])
        return pb.PodSandboxStatsResponse(stats=_pod_stats(pod))

    def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Ctx
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        filt = SandboxFilter(id=f.id, labels=tuple(f.label_selector.items()))
        sampled = self._sampler.sample(self._pods.list(filt))
        return pb.ListPodSandboxStatsResponse(stats=[_pod_stats(p) for p in sampled])

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
            descriptors=[convert.metric_descriptor(d) for d in cri_metric_families.ALL_DESCRIPTORS]
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
        now = time.time_ns()
        return [_pod_metrics(p, now) for p in self._sampler.sample(self._pods.list(), network=True)]


def _without_numbers(samples: Sequence[Sample]) -> list[Sample]:
    return [(c, None) for c, _ in samples]


def _container_stats(record: ContainerRecord, usage: ContainerUsage | None) -> pb.ContainerStats:
    try:
        return convert.container_stats(record, usage)
    except ValueError as exc:  # a figure the wire cannot carry
        log.warning("container %s: stats reported without numbers: %s", record.id, exc)
        return convert.container_stats(record, None)


def _pod_stats(pod: PodUsage) -> pb.PodSandboxStats:
    try:
        return convert.pod_sandbox_stats(pod.sandbox, list(pod.containers))
    except ValueError as exc:
        log.warning("sandbox %s: stats reported without numbers: %s", pod.sandbox.id, exc)
        return convert.pod_sandbox_stats(pod.sandbox, _without_numbers(pod.containers))


def _pod_metrics(pod: PodUsage, now_ns: int) -> pb.PodSandboxMetrics:
    try:
        return convert.pod_sandbox_metrics(
            cri_metrics.pod_metrics(pod.sandbox, pod.containers, pod.network, now_ns)
        )
    except ValueError as exc:
        log.warning("sandbox %s: metrics reported without numbers: %s", pod.sandbox.id, exc)
        return convert.pod_sandbox_metrics(
            cri_metrics.pod_metrics(pod.sandbox, _without_numbers(pod.containers), (), now_ns)
        )
