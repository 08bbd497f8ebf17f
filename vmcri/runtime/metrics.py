"""CRI pod and container metrics (ListMetricDescriptors, ListPodSandboxMetrics).

With ``PodAndContainerStatsFromCRI``, kubelet serves its ``/metrics/cadvisor``
endpoint from these RPCs instead of running cAdvisor: it asks once for the
descriptors (name, help, label keys), then for samples whose ``label_values``
line up with those keys. So the names, help texts and label keys follow
cAdvisor's, and only metrics computable from a backend's
:class:`~vmcri.handlers.base.ContainerUsage` sample are described.

The wire type carries an unsigned integer, so CPU time is reported in whole
seconds (cAdvisor's unit for this name); the nanosecond value stays available
through ContainerStats. Pod-level samples are the sums of the container
samples, labelled with an empty ``container`` like cAdvisor's pod cgroup.
Writable-layer inodes have no cAdvisor name (its ``container_fs_inodes_*``
describe the filesystem, not the layer), so they are not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from vmcri.handlers.base import ContainerUsage
from vmcri.store.records import ContainerRecord, SandboxRecord

NS_PER_S = 1_000_000_000

# cAdvisor's label keys for per-container series, in the order values are sent.
LABEL_KEYS: tuple[str, ...] = ("container", "id", "image", "name", "namespace", "pod")


class MetricKind(Enum):
    COUNTER = 0
    GAUGE = 1


@dataclass(frozen=True)
class MetricDescriptor:
    name: str
    help: str
    kind: MetricKind
    value: Callable[[ContainerUsage], int]
    label_keys: tuple[str, ...] = LABEL_KEYS


DESCRIPTORS: tuple[MetricDescriptor, ...] = (
    MetricDescriptor(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        MetricKind.COUNTER,
        lambda u: u.cpu_usage_core_nano_seconds // NS_PER_S,
    ),
    MetricDescriptor(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        MetricKind.GAUGE,
        lambda u: u.memory_working_set_bytes,
    ),
    MetricDescriptor(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        MetricKind.GAUGE,
        lambda u: u.memory_usage_bytes,
    ),
    MetricDescriptor(
        "container_memory_rss",
        "Size of RSS in bytes.",
        MetricKind.GAUGE,
        lambda u: u.memory_rss_bytes,
    ),
    MetricDescriptor(
        "container_processes",
        "Number of processes running inside the container.",
        MetricKind.GAUGE,
        lambda u: u.process_count,
    ),
    MetricDescriptor(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        MetricKind.GAUGE,
        lambda u: u.writable_layer_bytes,
    ),
)


@dataclass(frozen=True)
class MetricSample:
    name: str
    kind: MetricKind
    timestamp: int  # ns
    label_values: tuple[str, ...]
    value: int


@dataclass(frozen=True)
class ContainerMetrics:
    container_id: str
    samples: tuple[MetricSample, ...]


@dataclass(frozen=True)
class PodMetrics:
    sandbox_id: str
    samples: tuple[MetricSample, ...]
    containers: tuple[ContainerMetrics, ...]


def _labels(sandbox: SandboxRecord, container: ContainerRecord | None) -> tuple[str, ...]:
    meta = sandbox.config.metadata
    if container is None:
        return ("", sandbox.id, "", sandbox.id, meta.namespace, meta.name)
    return (
        container.config.metadata.name,
        container.id,
        container.image_name or container.config.image,
        container.id,
        meta.namespace,
        meta.name,
    )


def _samples(
    usage: ContainerUsage, labels: tuple[str, ...], timestamp: int
) -> tuple[MetricSample, ...]:
    return tuple(
        MetricSample(d.name, d.kind, timestamp, labels, d.value(usage)) for d in DESCRIPTORS
    )


def _sum(samples: Sequence[ContainerUsage]) -> ContainerUsage:
    return ContainerUsage(
        timestamp=max(u.timestamp for u in samples),
        cpu_usage_core_nano_seconds=sum(u.cpu_usage_core_nano_seconds for u in samples),
        memory_working_set_bytes=sum(u.memory_working_set_bytes for u in samples),
        memory_usage_bytes=sum(u.memory_usage_bytes for u in samples),
        memory_rss_bytes=sum(u.memory_rss_bytes for u in samples),
        writable_layer_bytes=sum(u.writable_layer_bytes for u in samples),
        writable_layer_inodes=sum(u.writable_layer_inodes for u in samples),
        process_count=sum(u.process_count for u in samples),
    )


def pod_metrics(
    sandbox: SandboxRecord,
    containers: Iterable[tuple[ContainerRecord, ContainerUsage | None]],
) -> PodMetrics:
    """Samples of every container that has a usage sample, and their pod-level sums.

    A container without a sample (not running, or its backend could not answer)
    is left out rather than reported as zero, which would read as a counter reset.
    """
    per_container: list[ContainerMetrics] = []
    usages: list[ContainerUsage] = []
    for container, usage in containers:
        if usage is None:
            continue
        usages.append(usage)
        labels = _labels(sandbox, container)
        per_container.append(
            ContainerMetrics(container.id, _samples(usage, labels, usage.timestamp))
        )
    pod_samples: tuple[MetricSample, ...] = ()
    if usages:
        total = _sum(usages)
        pod_samples = _samples(total, _labels(sandbox, None), total.timestamp)
    return PodMetrics(sandbox.id, pod_samples, tuple(per_container))
