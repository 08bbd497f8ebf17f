"""The [metrics] endpoint after a runc pod ran, parsed with prometheus_client's own parser.

The VM-only families (agent reconnects, VM deaths) are declared but have no
samples here: a VM pod under TCG is too slow for this test; their recording
calls are unit-tested (tests/unit/metrics).
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK
from tests.integration.service.conftest import (
    Busybox,
    free_loopback_port,
    remove_pods,
    run_runc_pod,
)
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scraped(
    busybox: Busybox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Metric]]:
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_loopback_port()
    config = tmp / "config.toml"
    config.write_text(
        f'registries_conf = "{busybox.registries_conf}"\n[metrics]\naddress = "127.0.0.1:{port}"\n'
        + NO_POD_NETWORK
    )
    daemon: RunningDaemon = start_daemon(tmp, config=config)
    runtime, images = daemon.runtime(), daemon.images()
    created: list[str] = []
    try:
        run_runc_pod(runtime, images, busybox.image, tmp / "logs", created)
        with pytest.raises(Exception, match="NOT_FOUND"):
            runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id="nope"), timeout=10)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        yield {family.name: family for family in text_string_to_metric_families(text)}
    finally:
        remove_pods(runtime, created)
        stop_daemon(daemon)


def _value(family: Metric, suffix: str = "", **labels: str) -> float:
    for sample in family.samples:
        if sample.name == family.name + suffix and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return float(sample.value)
    raise AssertionError(f"no {family.name}{suffix} sample with {labels}")


def test_rpc_counts_and_latency_per_method_and_code(scraped: dict[str, Metric]) -> None:
    requests = scraped["vmcri_cri_requests"]
    assert requests.type == "counter"
    assert _value(requests, "_total", method="RunPodSandbox", code="OK") == 1
    assert _value(requests, "_total", method="PodSandboxStatus", code="NOT_FOUND") == 1
    duration = scraped["vmcri_cri_request_duration_seconds"]
    assert duration.type == "histogram"
    assert _value(duration, "_count", method="StartContainer", code="OK") == 1
    assert _value(duration, "_sum", method="RunPodSandbox", code="OK") > 0


def test_pod_start_latency_per_handler(scraped: dict[str, Metric]) -> None:
    family = scraped["vmcri_pod_start_duration_seconds"]
    assert family.type == "histogram"
    assert _value(family, "_count", handler="runc", start="cold") == 1


def test_running_pods_and_containers_per_handler(scraped: dict[str, Metric]) -> None:
    assert _value(scraped["vmcri_running_pods"], handler="runc") == 1
    assert _value(scraped["vmcri_running_containers"], handler="runc") == 1
    assert _value(scraped["vmcri_running_pods"], handler="vm") == 0


def test_writable_layers_promised_against_free(scraped: dict[str, Metric]) -> None:
    # No VM pod ran here: nothing promised, the root dir's file system has room.
    assert _value(scraped["vmcri_writable_layers_promised_bytes"]) == 0
    assert _value(scraped["vmcri_writable_layers_claimable_bytes"]) == 0
    assert _value(scraped["vmcri_writable_layers_free_bytes"]) > 0


def test_image_pull_bytes_and_duration(scraped: dict[str, Metric]) -> None:
    assert _value(scraped["vmcri_image_pull_bytes"], "_total") > 0
    assert _value(scraped["vmcri_image_pull_duration_seconds"], "_count") == 1


def test_vm_families_are_declared(scraped: dict[str, Metric]) -> None:
    assert scraped["vmcri_agent_reconnects"].type == "counter"
    assert _value(scraped["vmcri_agent_reconnects"], "_total") == 0
    assert scraped["vmcri_vm_deaths"].type == "counter"


def _listening_tcp_sockets(pid: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    listening = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening += fields[3] == "0A" and fields[9] in inodes  # 0A: LISTEN
    return listening


def test_endpoint_is_off_by_default(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path)
    try:
        # The streaming server is the daemon's only TCP listener without [metrics].
        assert _listening_tcp_sockets(daemon.process.pid) == 1
    finally:
        stop_daemon(daemon)
