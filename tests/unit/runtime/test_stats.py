"""Stats and metrics lists with a pod that lies (issue 20.4) or stalls (20.5): the other
pods' answers stay prompt and exact, the liar's figures stay within its pod's bounds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.cri import convert
from vmcri.errors import DeadlineExceeded
from vmcri.model import ImageInfo
from vmcri.runtime.usage_bounds import MAX_U64, bounded, clamp, saturating_sum
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerUsage
from vmcri.usage import DeviceIo, UsageCounters

CTX: Any = None
IMAGE = ImageInfo(id="sha256:" + "b" * 64, name="example.test/app:1", layer_dirs=(), config={})
LIE = (1 << 63) - 1
MEMORY_BOUND = 8 << 30
NOW = 1_700_000_000 * 1_000_000_000


def test_sums_saturate_and_values_are_clamped() -> None:
    assert saturating_sum([LIE, LIE, LIE]) == MAX_U64
    assert saturating_sum([1, 2, -5]) == 3
    assert clamp(-1) == 0 and clamp(1 << 70) == MAX_U64 and clamp(7, 5) == 5


def test_memory_figures_are_held_to_the_bound_the_rest_to_uint64() -> None:
    usage = ContainerUsage(
        timestamp=LIE,
        cpu_usage_core_nano_seconds=LIE,
        memory_working_set_bytes=LIE,
        memory_usage_bytes=LIE,
        memory_rss_bytes=100,
        counters=UsageCounters(
            memory_cache_bytes=LIE, memory_swap_bytes=LIE, threads=LIE, io=(DeviceIo("vda", LIE),)
        ),
    )
    got = bounded(usage, MEMORY_BOUND, NOW)
    assert got.timestamp == NOW  # not in the host's future
    assert got.memory_working_set_bytes == got.memory_usage_bytes == MEMORY_BOUND
    assert got.memory_rss_bytes == 100
    assert got.cpu_usage_core_nano_seconds == LIE
    assert got.counters.memory_cache_bytes == MEMORY_BOUND
    assert got.counters.memory_swap_bytes == LIE and got.counters.threads == LIE
    assert got.counters.io[0].read_bytes == LIE


def _pod(rt: Runtime, name: str) -> str:
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, uid=name, namespace="n"))
    return str(
        rt.servicer.RunPodSandbox(pb.RunPodSandboxRequest(config=config), CTX).pod_sandbox_id
    )


def _running(rt: Runtime, sandbox_id: str, name: str) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image="app:1")
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    container_id = str(rt.servicer.CreateContainer(request, CTX).container_id)
    rt.servicer.StartContainer(pb.StartContainerRequest(container_id=container_id), CTX)
    return container_id


def _lie() -> ContainerUsage:
    return ContainerUsage(
        timestamp=time.time_ns(),
        cpu_usage_core_nano_seconds=LIE,
        memory_working_set_bytes=LIE,
        memory_usage_bytes=LIE,
        memory_rss_bytes=LIE,
        process_count=LIE,
        counters=UsageCounters(
            memory_cache_bytes=LIE, threads=LIE, io=(DeviceIo("vda", LIE, LIE),)
        ),
    )


HONEST = ContainerUsage(
    timestamp=1, cpu_usage_core_nano_seconds=5_000, memory_working_set_bytes=4096, process_count=2
)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(tmp_path, IMAGE, memory_bound=MEMORY_BOUND)


def test_a_pod_reporting_absurd_numbers_breaks_no_answer(rt: Runtime) -> None:
    liar, honest = _pod(rt, "liar"), _pod(rt, "honest")
    for i in range(3):
        rt.supervisor.samples[_running(rt, liar, f"c{i}")] = _lie()
    good = _running(rt, honest, "app")
    rt.supervisor.samples[good] = HONEST

    pods = {
        s.attributes.id: s
        for s in rt.servicer.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), CTX).stats
    }
    assert pods[honest].linux.cpu.usage_core_nano_seconds.value == 5_000
    assert pods[honest].linux.memory.working_set_bytes.value == 4096
    lied = pods[liar].linux
    assert lied.cpu.usage_core_nano_seconds.value == MAX_U64  # saturated, not wrapped
    assert lied.memory.working_set_bytes.value == 3 * MEMORY_BOUND  # three containers at most
    assert all(c.memory.usage_bytes.value == MEMORY_BOUND for c in lied.containers)

    metrics = rt.servicer.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), CTX).pod_metrics
    by_pod = {m.pod_sandbox_id: m for m in metrics}
    [honest_c] = by_pod[honest].container_metrics
    ws = next(m for m in honest_c.metrics if m.name == "container_memory_working_set_bytes")
    assert ws.value.value == 4096
    threads = next(m for m in by_pod[liar].metrics if m.name == "container_threads")
    reads = next(m for m in by_pod[liar].metrics if m.name == "container_fs_reads_bytes_total")
    assert threads.value.value == MAX_U64 and reads.value.value == MAX_U64

    stats = rt.servicer.ListContainerStats(pb.ListContainerStatsRequest(), CTX).stats
    assert {s.attributes.id: s.cpu.usage_core_nano_seconds.value for s in stats}[good] == 5_000


def test_a_pod_whose_numbers_cannot_be_encoded_is_reported_without_them(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, honest = _pod(rt, "bad"), _pod(rt, "honest")
    rt.supervisor.samples[_running(rt, bad, "app")] = HONEST
    rt.supervisor.samples[_running(rt, honest, "app")] = HONEST
    real = convert.pod_sandbox_stats

    def failing(record: SandboxRecord, containers: list[tuple[ContainerRecord, Any]]) -> Any:
        if record.id == bad and any(u is not None for _, u in containers):
            raise ValueError("Value out of range: 18446744073709551616")
        return real(record, containers)

    monkeypatch.setattr(convert, "pod_sandbox_stats", failing)
    stats = {
        s.attributes.id: s
        for s in rt.servicer.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), CTX).stats
    }
    assert not stats[bad].linux.HasField("cpu")
    assert stats[honest].linux.cpu.usage_core_nano_seconds.value == 5_000


def test_a_stalled_pod_costs_one_bounded_wait_and_delays_no_other_pod(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen, honest = _pod(rt, "frozen"), _pod(rt, "honest")
    stalled = {_running(rt, frozen, f"c{i}") for i in range(3)}
    good = _running(rt, honest, "app")
    rt.supervisor.samples[good] = HONEST
    asked: list[str] = []
    release = threading.Event()
    real = rt.supervisor.usage

    def usage(sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        asked.append(container.id)
        if container.id in stalled:
            # The agent's bounded call: here it ends when the honest pod has answered.
            assert release.wait(10), "the honest pod waited for the frozen one"
            raise DeadlineExceeded("agent call stats got no answer within 2.0s")
        release.set()
        return real(sandbox, container)

    monkeypatch.setattr(rt.supervisor, "usage", usage)
    stats = {
        s.attributes.id: s
        for s in rt.servicer.ListContainerStats(pb.ListContainerStatsRequest(), CTX).stats
    }
    assert stats[good].cpu.usage_core_nano_seconds.value == 5_000
    assert all(not stats[c].HasField("cpu") for c in stalled)
    assert len([c for c in asked if c in stalled]) == 1  # the frozen pod was asked once
