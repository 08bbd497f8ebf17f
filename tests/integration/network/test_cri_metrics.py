"""kubelet's CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) on both handlers:
every cAdvisor family kubelet's node conformance test requires, with values from the
container's cgroup (the host's for runc, the guest's for a VM pod), its writable layer's
file system, its record, and the pod's CNI interface in its namespace."""

from __future__ import annotations

import time

import pytest

from tests.integration.network.conftest import HTTP_PORT, NetEnv
from tests.integration.network.test_cni_pods import _answers
from tests.support.cadvisor import NETWORK, REQUIRED
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

MB = 1 << 20


def _start_limited_server(env: NetEnv, sandbox_id: str, pod: pb.PodSandboxConfig, text: str) -> str:
    """The suite's httpd with the limits kubelet would give a small Burstable container."""
    script = f"mkdir -p /www && echo {text} > /www/id && exec httpd -f -p {HTTP_PORT} -h /www"
    resources = pb.LinuxContainerResources(
        cpu_period=100_000, cpu_quota=50_000, cpu_shares=2,
        memory_limit_in_bytes=80 * MB, memory_swap_limit_in_bytes=80 * MB,
    )  # fmt: skip
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="web"),
        image=pb.ImageSpec(image=env.image),
        command=["sh", "-c", script],
        log_path="web.log",
        linux=pb.LinuxContainerConfig(resources=resources),
    )
    request = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
    )
    container_id = str(env.runtime.CreateContainer(request, timeout=120).container_id)
    env.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return container_id


@pytest.mark.parametrize("handler", ["runc", "vm"])
def test_every_required_family_has_sensible_values(env: NetEnv, handler: str) -> None:
    config = env.pod_config(f"metrics-{handler}")
    sandbox_id = env.run_pod(config, handler)
    container_id = _start_limited_server(env, sandbox_id, config, f"from-{handler}")
    ip = env.pod_status(sandbox_id).network.ip
    wait_for(lambda: _answers(ip, HTTP_PORT, f"from-{handler}"), 60, "the pod's server")

    descriptors = env.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(), timeout=30)
    keys = {d.name: list(d.label_keys) for d in descriptors.descriptors}
    response = env.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=60)
    [pod] = [m for m in response.pod_metrics if m.pod_sandbox_id == sandbox_id]
    [container] = pod.container_metrics
    assert container.container_id == container_id
    got: dict[str, dict[str, str]] = {}
    values: dict[str, int] = {}
    for metric in [*container.metrics, *pod.metrics]:
        labels = dict(zip(keys[metric.name], metric.label_values, strict=True))
        assert (labels["namespace"], labels["pod"]) == ("net", f"metrics-{handler}")
        if metric in container.metrics:
            assert labels["container"] == "web" and labels["id"] == container_id
        got.setdefault(metric.name, labels)
        values.setdefault(metric.name, metric.value.value)
    assert set(got) >= REQUIRED | NETWORK, sorted(REQUIRED | NETWORK - set(got))

    now = time.time()
    assert 10 * 1024 <= values["container_memory_working_set_bytes"] <= 80 * MB
    assert 10 * 1024 <= values["container_memory_rss"] <= values["container_memory_usage_bytes"]
    assert values["container_processes"] == 1  # httpd -f
    assert 1 <= values["container_threads"] <= 10
    assert 3 <= values["container_file_descriptors"] <= 100  # stdio and the listening socket
    assert 1 <= values["container_sockets"] <= 10
    assert values["container_spec_cpu_period"] == 100_000
    assert (values["container_spec_cpu_shares"], values["container_spec_cpu_quota"]) == (2, 50_000)
    assert values["container_spec_memory_limit_bytes"] == 80 * MB
    assert values["container_spec_memory_swap_limit_bytes"] == 80 * MB
    assert values["container_fs_limit_bytes"] >= 100 * MB
    assert now - 600 <= values["container_start_time_seconds"] <= now
    assert now - 60 <= values["container_last_seen"] <= now + 5
    assert values["container_oom_events_total"] == 0
    # The host fetched a page: the pod's interface received and sent frames.
    assert got["container_network_receive_bytes_total"]["interface"] == "eth0"
    assert values["container_network_receive_packets_total"] > 0
    assert values["container_network_transmit_bytes_total"] > 0
    env.remove(sandbox_id)
