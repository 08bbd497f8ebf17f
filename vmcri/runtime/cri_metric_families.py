"""The metric families vmcri serves to kubelet: cAdvisor's names, help texts and label keys.

One descriptor per family, with how its values come out of a container's sample
(:class:`Sampled`: the backend's usage sample and the container's record), or, for the
network families, out of one pod interface's counters. ``pod_sum`` says whether the
family is also reported per pod as the sum over its containers (usage is; limits, spec
values and times are not). :mod:`vmcri.runtime.cri_metrics` samples them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from vmcri.model import Resources
from vmcri.network.netstats import InterfaceCounters
from vmcri.store.records import ContainerRecord
from vmcri.supervisor.api import ContainerUsage

NS_PER_S = 1_000_000_000
DEFAULT_CPU_PERIOD_US = 100_000  # the kernel's CFS period when none is set
DEFAULT_CPU_SHARES = 1024  # cpu.shares of a cgroup nobody set

# cAdvisor's label keys for per-container series, in the order values are sent.
LABEL_KEYS: tuple[str, ...] = ("container", "id", "image", "name", "namespace", "pod")

Points = Iterable[tuple[tuple[str, ...], int]]  # (extra label values, value)


class MetricKind(Enum):
    COUNTER = 0
    GAUGE = 1


@dataclass(frozen=True)
class Sampled:
    """What a container's values are computed from."""

    usage: ContainerUsage
    container: ContainerRecord | None  # None for the pod's sums (only ``pod_sum`` families)


@dataclass(frozen=True)
class MetricDescriptor:
    name: str
    help: str
    kind: MetricKind
    points: Callable[[Sampled], Points]
    extra_labels: tuple[str, ...] = ()
    pod_sum: bool = True  # also reported per pod, as the sum over its containers

    @property
    def label_keys(self) -> tuple[str, ...]:
        return LABEL_KEYS + self.extra_labels


@dataclass(frozen=True)
class NetworkDescriptor:
    name: str
    help: str
    value: Callable[[InterfaceCounters], int]
    kind: MetricKind = MetricKind.COUNTER
    extra_labels: tuple[str, ...] = ("interface",)

    @property
    def label_keys(self) -> tuple[str, ...]:
        return LABEL_KEYS + self.extra_labels


def _one(value: Callable[[Sampled], int]) -> Callable[[Sampled], Points]:
    return lambda s: (((), value(s)),)


def _seconds(ns: int) -> int:
    return ns // NS_PER_S


def _device(s: Sampled) -> str:
    return s.usage.layer_fs.device if s.usage.layer_fs is not None else ""


def _layer_fs(value: Callable[[Sampled], int]) -> Callable[[Sampled], Points]:
    return lambda s: (((_device(s),), value(s)),) if s.usage.layer_fs is not None else ()


def _io(field: str) -> Callable[[Sampled], Points]:
    def points(s: Sampled) -> Points:
        io = s.usage.counters.io
        if not io:  # no block I/O yet: a zero on the layer's device, so the series exists
            return (((_device(s),), 0),)
        return (((d.device,), getattr(d, field)) for d in io)

    return points


def _blkio(s: Sampled) -> Points:
    """cAdvisor's device label is the device node ("/dev/vda"), "" when it has no name;
    major and minor are its numbers; the operations of io.stat are Read and Write."""
    for d in s.usage.counters.io:
        node = "" if ":" in d.device else f"/dev/{d.device}"
        numbers = (str(d.major), str(d.minor))
        yield ((node, *numbers, "Read"), d.read_bytes)
        yield ((node, *numbers, "Write"), d.write_bytes)


def _failures(s: Sampled) -> Points:
    c = s.usage.counters
    return (
        (("pgfault", "container"), c.pgfault),
        (("pgmajfault", "container"), c.pgmajfault),
        (("pgfault", "hierarchy"), c.pgfault_hierarchy),
        (("pgmajfault", "hierarchy"), c.pgmajfault_hierarchy),
    )


def _resources(s: Sampled) -> Resources:
    assert s.container is not None, "spec families are per container (pod_sum=False)"
    return s.container.config.resources


def _started(s: Sampled) -> int:
    assert s.container is not None, "start times are per container (pod_sum=False)"
    return s.container.started_at


def _if_set(value: Callable[[Sampled], int]) -> Callable[[Sampled], Points]:
    return lambda s: (((), v),) if (v := value(s)) > 0 else ()


C, G = MetricKind.COUNTER, MetricKind.GAUGE
DEVICE = ("device",)

DESCRIPTORS: tuple[MetricDescriptor, ...] = (
    # CPU
    MetricDescriptor(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        C,
        _one(lambda s: _seconds(s.usage.cpu_usage_core_nano_seconds)),
    ),
    MetricDescriptor(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        C,
        _one(lambda s: _seconds(s.usage.counters.cpu_user_ns)),
    ),
    MetricDescriptor(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        C,
        _one(lambda s: _seconds(s.usage.counters.cpu_system_ns)),
    ),
    MetricDescriptor(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        C,
        _one(lambda s: s.usage.counters.cfs_periods),
    ),
    MetricDescriptor(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        C,
        _one(lambda s: s.usage.counters.cfs_throttled_periods),
    ),
    MetricDescriptor(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        C,
        _one(lambda s: _seconds(s.usage.counters.cfs_throttled_ns)),
    ),
    # Memory
    MetricDescriptor(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        G,
        _one(lambda s: s.usage.memory_usage_bytes),
    ),
    MetricDescriptor(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        G,
        _one(lambda s: s.usage.memory_working_set_bytes),
    ),
    MetricDescriptor(
        "container_memory_rss", "Size of RSS in bytes.", G, _one(lambda s: s.usage.memory_rss_bytes)
    ),
    MetricDescriptor(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        G,
        _one(lambda s: s.usage.counters.memory_cache_bytes),
    ),
    MetricDescriptor(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        G,
        _one(lambda s: s.usage.counters.memory_mapped_file_bytes),
    ),
    MetricDescriptor(
        "container_memory_swap",
        "Container swap usage in bytes.",
        G,
        _one(lambda s: s.usage.counters.memory_swap_bytes),
    ),
    MetricDescriptor(
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
        G,
        _one(lambda s: s.usage.counters.memory_kernel_bytes),
    ),
    MetricDescriptor(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
        G,
        _one(lambda s: s.usage.counters.memory_max_usage_bytes),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        C,
        _one(lambda s: s.usage.counters.memory_failcnt),
    ),
    MetricDescriptor(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        C,
        _failures,
        extra_labels=("failure_type", "scope"),
    ),
    # File system: the writable layer's, and block I/O
    MetricDescriptor(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        G,
        lambda s: (((_device(s),), s.usage.writable_layer_bytes),),
        extra_labels=DEVICE,
    ),
    MetricDescriptor(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        G,
        _layer_fs(lambda s: s.usage.layer_fs.limit_bytes if s.usage.layer_fs else 0),
        extra_labels=DEVICE,
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_fs_inodes_total",
        "Number of Inodes",
        G,
        _layer_fs(lambda s: s.usage.layer_fs.inodes_total if s.usage.layer_fs else 0),
        extra_labels=DEVICE,
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_fs_inodes_free",
        "Number of available Inodes",
        G,
        _layer_fs(lambda s: s.usage.layer_fs.inodes_free if s.usage.layer_fs else 0),
        extra_labels=DEVICE,
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read",
        C,
        _io("read_bytes"),
        extra_labels=DEVICE,
    ),
    MetricDescriptor(
        "container_fs_reads_total",
        "Cumulative count of reads completed",
        C,
        _io("reads"),
        extra_labels=DEVICE,
    ),
    MetricDescriptor(
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written",
        C,
        _io("write_bytes"),
        extra_labels=DEVICE,
    ),
    MetricDescriptor(
        "container_fs_writes_total",
        "Cumulative count of writes completed",
        C,
        _io("writes"),
        extra_labels=DEVICE,
    ),
    MetricDescriptor(
        "container_blkio_device_usage_total",
        "Blkio Device bytes usage",
        C,
        _blkio,
        extra_labels=("device", "major", "minor", "operation"),
    ),
    # Processes
    MetricDescriptor(
        "container_processes",
        "Number of processes running inside the container.",
        G,
        _one(lambda s: s.usage.counters.processes or s.usage.process_count),
    ),
    MetricDescriptor(
        "container_threads",
        "Number of threads running inside the container",
        G,
        _one(lambda s: s.usage.counters.threads),
    ),
    MetricDescriptor(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        G,
        _one(lambda s: s.usage.counters.threads_max),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        G,
        _one(lambda s: s.usage.counters.file_descriptors),
    ),
    MetricDescriptor(
        "container_sockets",
        "Number of open sockets for the container.",
        G,
        _one(lambda s: s.usage.counters.sockets),
    ),
    MetricDescriptor(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        C,
        _one(lambda s: s.usage.counters.oom_events),
    ),
    # Spec, from the container's configuration
    MetricDescriptor(
        "container_spec_cpu_period",
        "CPU period of the container.",
        G,
        _one(lambda s: _resources(s).cpu_period or DEFAULT_CPU_PERIOD_US),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        G,
        _if_set(lambda s: _resources(s).cpu_quota),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_spec_cpu_shares",
        "CPU share of the container.",
        G,
        _one(lambda s: _resources(s).cpu_shares or DEFAULT_CPU_SHARES),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container in bytes.",
        G,
        _if_set(lambda s: _resources(s).memory_limit_in_bytes),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_spec_memory_swap_limit_bytes",
        "Memory swap limit for the container.",
        G,
        _if_set(lambda s: _resources(s).memory_swap_limit_in_bytes),
        pod_sum=False,
    ),
    # Times
    MetricDescriptor(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        G,
        _if_set(lambda s: _seconds(_started(s))),
        pod_sum=False,
    ),
    MetricDescriptor(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        G,
        _one(lambda s: _seconds(s.usage.timestamp)),
        pod_sum=False,
    ),
)

NETWORK_DESCRIPTORS: tuple[NetworkDescriptor, ...] = (
    NetworkDescriptor(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        lambda n: n.rx_bytes,
    ),
    NetworkDescriptor(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        lambda n: n.rx_packets,
    ),
    NetworkDescriptor(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        lambda n: n.rx_dropped,
    ),
    NetworkDescriptor(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        lambda n: n.rx_errors,
    ),
    NetworkDescriptor(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        lambda n: n.tx_bytes,
    ),
    NetworkDescriptor(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        lambda n: n.tx_packets,
    ),
    NetworkDescriptor(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        lambda n: n.tx_dropped,
    ),
    NetworkDescriptor(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        lambda n: n.tx_errors,
    ),
)

ALL_DESCRIPTORS: tuple[MetricDescriptor | NetworkDescriptor, ...] = (
    DESCRIPTORS + NETWORK_DESCRIPTORS
)
