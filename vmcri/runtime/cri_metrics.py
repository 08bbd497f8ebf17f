"""CRI pod and container metrics (ListMetricDescriptors, ListPodSandboxMetrics).

With ``PodAndContainerStatsFromCRI``, kubelet serves its ``/metrics/cadvisor``
endpoint from these RPCs instead of running cAdvisor: it asks once for the
descriptors (name, help, label keys), then for samples whose ``label_values``
line up with those keys. So the names, help texts and label keys are cAdvisor's
(as CRI-O and containerd serve them), and the families are those kubelet's node
conformance test requires: CPU, memory, file system, processes, OOM events, spec,
start time and last seen per container, network per pod.

Sources: a backend's :class:`~vmcri.handlers.base.ContainerUsage` sample (the
container's cgroup and processes, in the guest for VM pods; its writable layer's
file system on the host), the container record (spec, start time), and the pod's
interfaces in its network namespace on the host (``vmcri/network/netstats.py``).

The wire type carries an unsigned integer, so times are whole seconds (cAdvisor's
unit for these names; containerd truncates the same way). Pod-level samples, with an
empty ``container`` label like containerd's, are the sums of the container samples
for the families where a sum means something (usage, not limits or times), and the
network families, which exist only per pod.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vmcri.network.netstats import InterfaceCounters
from vmcri.runtime.cri_metric_families import (
    DESCRIPTORS,
    NETWORK_DESCRIPTORS,
    MetricDescriptor,
    MetricKind,
    Sampled,
)
from vmcri.runtime.usage_bounds import saturating_sum
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerUsage
from vmcri.usage import DeviceIo, UsageCounters


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


def _sum(usages: Sequence[ContainerUsage]) -> ContainerUsage:
    """The pod's usage: every count summed (block I/O per device), before any unit change;
    each sum saturates at the wire's 2^64-1 (vmcri.runtime.usage_bounds)."""
    io: dict[tuple[str, int, int], list[int]] = {}
    for u in usages:
        for d in u.counters.io:
            totals = io.setdefault((d.device, d.major, d.minor), [0, 0, 0, 0])
            for k, v in enumerate((d.read_bytes, d.write_bytes, d.reads, d.writes)):
                totals[k] = saturating_sum((totals[k], v))
    counters = {
        f.name: saturating_sum(getattr(u.counters, f.name) for u in usages)
        for f in dataclasses.fields(UsageCounters)
        if f.name != "io"
    }
    plain: dict[str, Any] = {
        f.name: saturating_sum(getattr(u, f.name) for u in usages)
        for f in dataclasses.fields(ContainerUsage)
        if f.name not in ("timestamp", "counters", "layer_fs")
    }
    return ContainerUsage(
        timestamp=max(u.timestamp for u in usages),
        counters=UsageCounters(
            **counters,
            io=tuple(
                DeviceIo(dev, v[0], v[1], v[2], v[3], major=major, minor=minor)
                for (dev, major, minor), v in sorted(io.items())
            ),
        ),
        **plain,
    )


def pod_metrics(
    sandbox: SandboxRecord,
    containers: Iterable[tuple[ContainerRecord, ContainerUsage | None]],
    network: Sequence[InterfaceCounters] = (),
    now_ns: int = 0,
) -> PodMetrics:
    """Samples of every container that has a usage sample, and the pod's own.

    A container without a sample (not running, or its backend could not answer)
    is left out rather than reported as zero, which would read as a counter reset.
    ``now_ns`` stamps the network samples when no container has a sample.
    """
    per_container: list[ContainerMetrics] = []
    usages: list[ContainerUsage] = []
    for container, usage in containers:
        if usage is None:
            continue
        usages.append(usage)
        per_container.append(
            ContainerMetrics(
                container.id,
                _samples(Sampled(usage, container), _labels(sandbox, container), DESCRIPTORS),
            )
        )
    pod_labels = _labels(sandbox, None)
    pod_samples: list[MetricSample] = []
    stamp = now_ns
    if usages:
        total = _sum(usages)
        stamp = total.timestamp
        summed = tuple(d for d in DESCRIPTORS if d.pod_sum)
        pod_samples.extend(_samples(Sampled(total, None), pod_labels, summed))
    for nd in NETWORK_DESCRIPTORS:
        for iface in network:
            pod_samples.append(
                MetricSample(
                    nd.name, nd.kind, stamp, (*pod_labels, iface.interface), nd.value(iface)
                )
            )
    return PodMetrics(sandbox.id, tuple(pod_samples), tuple(per_container))


def _samples(
    sampled: Sampled, labels: tuple[str, ...], descriptors: Iterable[MetricDescriptor]
) -> tuple[MetricSample, ...]:
    ts = sampled.usage.timestamp
    return tuple(
        MetricSample(d.name, d.kind, ts, labels + extra, value)
        for d in descriptors
        for extra, value in d.points(sampled)
    )
