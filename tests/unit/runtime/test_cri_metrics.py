"""The cAdvisor families kubelet's CRI stats path serves (issue: CRI conformance, item 5):
descriptors, per-container values from a usage sample and the record, pod sums, and the
pod's network counters (read in its namespace on the host)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cadvisor import NETWORK, REQUIRED
from vmcri.config import NetworkConfig
from vmcri.model import ContainerConfig, Metadata, PodConfig, Resources
from vmcri.network.netstats import InterfaceCounters, parse_net_dev, read_counters
from vmcri.network.service import PodNetworking
from vmcri.runtime.cri_metric_families import ALL_DESCRIPTORS, LABEL_KEYS
from vmcri.runtime.cri_metrics import MetricSample, PodMetrics, pod_metrics
from vmcri.store.pod_network import NetInterface, PodNetwork
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerUsage
from vmcri.usage import DeviceIo, FsCapacity, UsageCounters

S = 1_000_000_000

# What kubelet's node conformance test (CRIContainerMetrics) requires per container, and
# per pod for the network.
ALSO = {"container_memory_kernel_usage", "container_memory_failcnt", "container_spec_cpu_quota",
        "container_fs_inodes_total", "container_fs_inodes_free",
        "container_blkio_device_usage_total"}  # fmt: skip


def test_every_family_of_the_issue_and_kubelets_conformance_test_is_described() -> None:
    keys = {d.name: d.label_keys for d in ALL_DESCRIPTORS}
    assert set(keys) >= REQUIRED | NETWORK | ALSO
    assert len(keys) == len(ALL_DESCRIPTORS)  # one descriptor per family
    assert all(k[: len(LABEL_KEYS)] == LABEL_KEYS for k in keys.values())
    assert keys["container_memory_failures_total"][6:] == ("failure_type", "scope")
    assert keys["container_fs_reads_total"][6:] == ("device",)
    # cAdvisor's: kubelet's cAdvisor-from-CRI path reads these labels.
    assert keys["container_blkio_device_usage_total"][6:] == (
        "device", "major", "minor", "operation"
    )  # fmt: skip
    assert all(keys[n][6:] == ("interface",) for n in NETWORK)
    assert all(d.help for d in ALL_DESCRIPTORS)


def _records(started_at: int = 0) -> tuple[SandboxRecord, ContainerRecord, ContainerRecord]:
    pod = PodConfig(metadata=Metadata(name="web", uid="u", namespace="ns"))
    sandbox = SandboxRecord(id="s" * 64, handler="runc", backend="runc", config=pod)
    mib80 = 80 << 20
    limited = Resources(cpu_period=50_000, cpu_quota=25_000, cpu_shares=2,
                        memory_limit_in_bytes=mib80, memory_swap_limit_in_bytes=mib80)  # fmt: skip
    a = ContainerRecord(
        id="a" * 64,
        sandbox_id=sandbox.id,
        config=ContainerConfig(metadata=Metadata(name="a"), image="app:1", resources=limited),
        image_id="sha256:x",
        image_name="example.test/app:1",
        started_at=started_at,
    )
    b = ContainerRecord(
        id="b" * 64,
        sandbox_id=sandbox.id,
        config=ContainerConfig(metadata=Metadata(name="b"), image="app:1"),
        image_id="sha256:x",
        image_name="example.test/app:1",
        started_at=started_at,
    )
    return sandbox, a, b


def _usage(ts: int, cpu_ns: int, io: tuple[DeviceIo, ...] = ()) -> ContainerUsage:
    counters = UsageCounters(
        cpu_user_ns=cpu_ns // 2, cpu_system_ns=cpu_ns // 4, cfs_periods=7,
        cfs_throttled_periods=3, cfs_throttled_ns=2 * S, memory_cache_bytes=100,
        memory_mapped_file_bytes=50, memory_kernel_bytes=30, memory_max_usage_bytes=900,
        memory_failcnt=1, pgfault=10, pgmajfault=1, pgfault_hierarchy=12,
        pgmajfault_hierarchy=2, oom_events=1, processes=2, threads=5, threads_max=0,
        file_descriptors=9, sockets=1, io=io,
    )  # fmt: skip
    return ContainerUsage(
        timestamp=ts, cpu_usage_core_nano_seconds=cpu_ns, memory_working_set_bytes=400,
        memory_usage_bytes=500, memory_rss_bytes=300, writable_layer_bytes=4096,
        writable_layer_inodes=3, process_count=5, counters=counters,
        layer_fs=FsCapacity("loop3", 10 << 30, 1000, 900),
    )  # fmt: skip


def _values(samples: tuple[MetricSample, ...], name: str) -> dict[tuple[str, ...], int]:
    return {s.label_values[6:]: s.value for s in samples if s.name == name}


def _metrics() -> tuple[PodMetrics, ContainerRecord]:
    sandbox, a, b = _records(started_at=1_700_000_000 * S + 5)
    io = (
        DeviceIo("vda", 4096, 0, 1, 0, major=253, minor=0),
        DeviceIo("vdb", 10, 20, 1, 2, major=253, minor=16),
    )
    eth0 = InterfaceCounters("eth0", 1000, 10, 1, 2, 500, 5, 0, 3)
    got = pod_metrics(
        sandbox,
        [(a, _usage(100 * S, 3_500_000_000, io)), (b, _usage(101 * S, 1_600_000_000)), (b, None)],
        network=[eth0],
    )
    return got, a


def test_container_values_come_from_the_sample_and_the_record() -> None:
    got, a = _metrics()
    ca = next(c for c in got.containers if c.container_id == a.id).samples
    assert _values(ca, "container_cpu_usage_seconds_total") == {(): 3}
    assert _values(ca, "container_cpu_user_seconds_total") == {(): 1}
    assert _values(ca, "container_cpu_cfs_throttled_seconds_total") == {(): 2}
    assert _values(ca, "container_memory_failures_total") == {
        ("pgfault", "container"): 10, ("pgmajfault", "container"): 1,
        ("pgfault", "hierarchy"): 12, ("pgmajfault", "hierarchy"): 2,
    }  # fmt: skip
    assert _values(ca, "container_fs_usage_bytes") == {("loop3",): 4096}
    assert _values(ca, "container_fs_limit_bytes") == {("loop3",): 10 << 30}
    assert _values(ca, "container_fs_reads_bytes_total") == {("vda",): 4096, ("vdb",): 10}
    assert _values(ca, "container_blkio_device_usage_total") == {
        ("/dev/vda", "253", "0", "Read"): 4096, ("/dev/vda", "253", "0", "Write"): 0,
        ("/dev/vdb", "253", "16", "Read"): 10, ("/dev/vdb", "253", "16", "Write"): 20,
    }  # fmt: skip
    assert _values(ca, "container_processes") == {(): 2}
    assert _values(ca, "container_spec_cpu_period") == {(): 50_000}
    assert _values(ca, "container_spec_cpu_quota") == {(): 25_000}
    assert _values(ca, "container_spec_cpu_shares") == {(): 2}
    assert _values(ca, "container_spec_memory_limit_bytes") == {(): 80 << 20}
    assert _values(ca, "container_start_time_seconds") == {(): 1_700_000_000}
    assert _values(ca, "container_last_seen") == {(): 100}
    cpu = next(s for s in ca if s.name == "container_cpu_usage_seconds_total")
    assert cpu.label_values == ("a", a.id, "example.test/app:1", a.id, "ns", "web")
    assert cpu.timestamp == 100 * S


def test_a_container_without_limits_or_io_gets_defaults_and_a_zero_io_series() -> None:
    got, a = _metrics()
    cb = next(c for c in got.containers if c.container_id != a.id).samples
    assert _values(cb, "container_spec_cpu_period") == {(): 100_000}  # the kernel's
    assert _values(cb, "container_spec_cpu_shares") == {(): 1024}
    assert _values(cb, "container_spec_cpu_quota") == {}  # no quota: no series, as cAdvisor
    assert _values(cb, "container_spec_memory_limit_bytes") == {}
    assert _values(cb, "container_fs_writes_total") == {("loop3",): 0}
    assert len(got.containers) == 2  # the sample-less entry is left out


def test_pod_samples_sum_usage_before_units_change_and_carry_the_network() -> None:
    got, _ = _metrics()
    pod = got.samples
    assert _values(pod, "container_cpu_usage_seconds_total") == {(): 5}  # 5.1 s, not 3 + 1
    assert _values(pod, "container_memory_working_set_bytes") == {(): 800}
    assert _values(pod, "container_fs_reads_total") == {("vda",): 1, ("vdb",): 1}
    assert _values(pod, "container_blkio_device_usage_total")[
        ("/dev/vdb", "253", "16", "Write")
    ] == 20  # fmt: skip
    per_container_only = ("container_spec_cpu_period", "container_fs_limit_bytes",
                          "container_start_time_seconds", "container_threads_max")  # fmt: skip
    for name in per_container_only:
        assert _values(pod, name) == {}
    assert _values(pod, "container_network_receive_bytes_total") == {("eth0",): 1000}
    assert _values(pod, "container_network_transmit_packets_dropped_total") == {("eth0",): 3}
    rx = next(s for s in pod if s.name == "container_network_receive_bytes_total")
    assert rx.label_values[:2] == ("", "s" * 64) and rx.timestamp == 101 * S


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0: 1000 10 1 2 0 0 0 0 500 5 0 3 0 0 0 0
 bogus: not numbers
"""  # noqa: E501


def test_net_dev_is_parsed_and_a_missing_namespace_reads_as_nothing(tmp_path: Path) -> None:
    parsed = parse_net_dev(NET_DEV)
    assert set(parsed) == {"lo", "eth0"}
    assert parsed["eth0"] == InterfaceCounters("eth0", 1000, 10, 1, 2, 500, 5, 0, 3)
    assert read_counters(str(tmp_path / "no-such-netns"), ["eth0"]) == ()


def test_the_pods_cni_interfaces_are_read_in_its_namespace(tmp_path: Path) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    def reader(path: str, names: object) -> tuple[InterfaceCounters, ...]:
        asked.append((path, tuple(names)))  # type: ignore[arg-type]
        return (InterfaceCounters("eth0", 1),)

    net = PodNetworking(NetworkConfig(), tmp_path, lambda: "", read_counters=reader)
    sandbox, _, _ = _records()
    assert net.counters(sandbox) == ()  # host network: nothing to read
    # The veth's host end (no sandbox) is not the pod's; a VM pod's tap is not in the result.
    network = PodNetwork(netns_path="/run/netns/p", interfaces=(
        NetInterface("cni0"), NetInterface("veth12"), NetInterface("eth0", sandbox="/run/netns/p"),
    ))  # fmt: skip
    with_net = SandboxRecord(id="s" * 64, handler="vm", backend="vm", config=sandbox.config,
                             network=network)  # fmt: skip
    assert net.counters(with_net) == (InterfaceCounters("eth0", 1),)
    assert asked == [("/run/netns/p", ("eth0",))]
