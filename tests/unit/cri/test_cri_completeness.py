"""Metrics, ContainerStatus user/stop_signal/resources, pod resize and the Stream* list forms.

Driven through the RuntimeServicer over real services and store, with a fake backend.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.cri.validate import check_request
from vmcri.errors import InvalidArgument, NotFound
from vmcri.model import ImageInfo, Resources
from vmcri.runtime import cri_metric_families, identity
from vmcri.supervisor.api import ContainerUsage

CTX: Any = None


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    root = tmp_path / "layer0"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nvideo:x:44:app\n")
    return root


@pytest.fixture
def rt(tmp_path: Path, layer: Path) -> Runtime:
    image = ImageInfo(
        id="sha256:" + "a" * 64,
        name="example.test/app:1",
        layer_dirs=(str(layer),),
        config={"User": "app", "StopSignal": "SIGQUIT"},
    )
    return wire(tmp_path, image)


def _pod(rt: Runtime, name: str = "p", labels: dict[str, str] | None = None) -> str:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"u-{name}", namespace="ns"),
        labels=labels or {},
    )
    return str(
        rt.servicer.RunPodSandbox(pb.RunPodSandboxRequest(config=config), CTX).pod_sandbox_id
    )


def _container(rt: Runtime, sandbox_id: str, name: str = "c", **fields: Any) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image="app:1"), **fields
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    return str(rt.servicer.CreateContainer(request, CTX).container_id)


def _status(rt: Runtime, container_id: str) -> pb.ContainerStatus:
    request = pb.ContainerStatusRequest(container_id=container_id)
    return rt.servicer.ContainerStatus(request, CTX).status


# ---------------------------------------------------------------- ContainerStatus


def test_status_user_comes_from_the_image_user_and_its_groups(rt: Runtime) -> None:
    status = _status(rt, _container(rt, _pod(rt)))
    assert status.user.linux.uid == 1000
    assert status.user.linux.gid == 1001
    assert list(status.user.linux.supplemental_groups) == [1001, 44]


def test_status_user_follows_run_as_user_group_and_strict_groups(rt: Runtime) -> None:
    linux = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(
            run_as_user=pb.Int64Value(value=0),
            run_as_group=pb.Int64Value(value=7),
            supplemental_groups=[9, 10],
            supplemental_groups_policy=pb.Strict,
        )
    )
    status = _status(rt, _container(rt, _pod(rt), linux=linux))
    assert (status.user.linux.uid, status.user.linux.gid) == (0, 7)
    assert list(status.user.linux.supplemental_groups) == [7, 9, 10]


def test_status_user_reads_the_topmost_layer(tmp_path: Path, layer: Path) -> None:
    upper = tmp_path / "layer1"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "passwd").write_text("app:x:2000:2000::/:/bin/sh\n")
    image = ImageInfo("sha256:" + "b" * 64, "x", (str(layer), str(upper)), {"User": "app"})
    rt = wire(tmp_path, image)
    status = _status(rt, _container(rt, _pod(rt)))
    assert (status.user.linux.uid, status.user.linux.gid) == (2000, 2000)


def test_status_stop_signal_prefers_the_cri_config_over_the_image(rt: Runtime) -> None:
    sandbox_id = _pod(rt)
    from_image = _status(rt, _container(rt, sandbox_id, "a"))
    from_config = _status(rt, _container(rt, sandbox_id, "b", stop_signal=pb.SIGNAL_SIGUSR1))
    assert from_image.stop_signal == pb.SIGNAL_SIGQUIT
    assert from_config.stop_signal == pb.SIGNAL_SIGUSR1


def test_status_stop_signal_defaults_to_sigterm(tmp_path: Path) -> None:
    rt = wire(tmp_path, ImageInfo("sha256:" + "c" * 64, "x", (), {}))
    assert _status(rt, _container(rt, _pod(rt))).stop_signal == pb.SIGNAL_SIGTERM


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIGKILL", pb.SIGNAL_SIGKILL),
        ("TERM", pb.SIGNAL_SIGTERM),
        ("15", pb.SIGNAL_SIGTERM),
        ("SIGRTMIN+3", pb.SIGNAL_SIGRTMINPLUS3),
        ("SIGRTMAX-1", pb.SIGNAL_SIGRTMAXMINUS1),
        ("BOGUS", 0),
    ],
)
def test_image_stop_signal_spellings_map_to_the_cri_enum(
    tmp_path: Path, name: str, value: int
) -> None:
    rt = wire(tmp_path, ImageInfo("sha256:" + "d" * 64, "x", (), {"StopSignal": name}))
    assert _status(rt, _container(rt, _pod(rt))).stop_signal == value


def test_status_resources_reflect_update_container_resources(rt: Runtime) -> None:
    container_id = _container(rt, _pod(rt))
    linux = pb.LinuxContainerResources(
        cpu_shares=512,
        memory_limit_in_bytes=64 << 20,
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)],
    )
    request = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux)
    rt.servicer.UpdateContainerResources(request, CTX)
    got = _status(rt, container_id).resources.linux
    assert (got.cpu_shares, got.memory_limit_in_bytes) == (512, 64 << 20)
    assert [(h.page_size, h.limit) for h in got.hugepage_limits] == [("2MB", 4 << 20)]
    assert rt.backend.updates[-1][0] == container_id


# ---------------------------------------------------------------- UpdatePodSandboxResources


def test_update_pod_sandbox_resources_is_recorded(rt: Runtime) -> None:
    sandbox_id = _pod(rt)
    request = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=sandbox_id,
        resources=pb.LinuxContainerResources(cpu_quota=50000, cpu_period=100000),
    )
    rt.servicer.UpdatePodSandboxResources(request, CTX)
    config = rt.services.store.sandboxes.get(sandbox_id).config
    assert (config.resources.cpu_quota, config.resources.cpu_period) == (50000, 100000)
    assert config.overhead.cpu_quota == 0  # absent in the request: left as it was
    # the backend made room first (a VM grows): it was told the new pod-level limits
    assert rt.backend.updates[-1] == (sandbox_id, config.resources)


def test_update_pod_sandbox_resources_rejects_bad_values_and_unknown_pods(rt: Runtime) -> None:
    sandbox_id = _pod(rt)
    # Values outside the kernel's range never pass the edge ...
    bad = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=sandbox_id, overhead=pb.LinuxContainerResources(cpu_shares=-1)
    )
    with pytest.raises(InvalidArgument, match=r"^overhead\.cpu_shares"):
        check_request(bad)
    # ... and unlimited swap, valid CRI, is refused before the backend hears of it.
    unlimited = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=sandbox_id,
        overhead=pb.LinuxContainerResources(memory_swap_limit_in_bytes=-1),
    )
    check_request(unlimited)
    with pytest.raises(InvalidArgument, match=r"overhead\.memory_swap_limit_in_bytes"):
        rt.servicer.UpdatePodSandboxResources(unlimited, CTX)
    assert rt.services.store.sandboxes.get(sandbox_id).config.overhead == Resources()
    assert rt.backend.updates == []
    with pytest.raises(NotFound, match="pod_sandbox_id"):
        rt.servicer.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="nope"), CTX
        )


# ---------------------------------------------------------------- metrics


def _start(rt: Runtime, container_id: str, usage: ContainerUsage) -> None:
    rt.servicer.StartContainer(pb.StartContainerRequest(container_id=container_id), CTX)
    rt.supervisor.samples[container_id] = usage


def test_descriptors_name_cadvisor_metrics_with_consistent_label_keys(rt: Runtime) -> None:
    got = rt.servicer.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(), CTX).descriptors
    names = {d.name for d in got}
    assert {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_processes",
        "container_fs_usage_bytes",
    } <= names
    assert all(
        list(d.label_keys)[:6] == list(cri_metric_families.LABEL_KEYS) and d.help for d in got
    )


def test_pod_sandbox_metrics_per_container_and_summed_per_pod(rt: Runtime) -> None:
    sandbox_id = _pod(rt, "web")
    a, b, idle = (_container(rt, sandbox_id, n) for n in ("a", "b", "idle"))
    _start(rt, a, ContainerUsage(100, 3_500_000_000, 10, 20, 5, 1000, 3, 2))
    _start(rt, b, ContainerUsage(200, 1_600_000_000, 1, 2, 3, 4, 5, 1))
    response = rt.servicer.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), CTX)
    [pod] = response.pod_metrics
    assert pod.pod_sandbox_id == sandbox_id
    assert {c.container_id for c in pod.container_metrics} == {a, b}  # idle never ran
    by_name = {m.name: m for m in pod.metrics}
    cpu = by_name["container_cpu_usage_seconds_total"]
    assert (cpu.value.value, cpu.metric_type, cpu.timestamp) == (5, pb.COUNTER, 200)
    assert by_name["container_memory_working_set_bytes"].value.value == 11
    assert by_name["container_memory_working_set_bytes"].metric_type == pb.GAUGE
    assert by_name["container_processes"].value.value == 3
    assert list(cpu.label_values) == ["", sandbox_id, "", sandbox_id, "ns", "web"]
    [ca] = [c for c in pod.container_metrics if c.container_id == a]
    ca_cpu = next(m for m in ca.metrics if m.name == "container_cpu_usage_seconds_total")
    assert ca_cpu.value.value == 3 and ca_cpu.timestamp == 100
    assert list(ca_cpu.label_values) == ["a", a, "example.test/app:1", a, "ns", "web"]
    assert idle  # created only


def test_pod_without_running_containers_has_no_samples(rt: Runtime) -> None:
    _container(rt, _pod(rt))
    [pod] = rt.servicer.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), CTX).pod_metrics
    assert not pod.metrics and not pod.container_metrics


# ---------------------------------------------------------------- Stream* list forms


def test_stream_forms_send_the_filtered_list_in_chunks(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vmcri.cri.rpc_common.STREAM_CHUNK", 2)
    ids = [_pod(rt, f"p{i}", {"app": "x" if i < 3 else "y"}) for i in range(4)]
    for sandbox_id in ids:
        _container(rt, sandbox_id, labels={"tier": "t"})
    flt = pb.PodSandboxFilter(label_selector={"app": "x"})
    chunks = list(rt.servicer.StreamPodSandboxes(pb.StreamPodSandboxesRequest(filter=flt), CTX))
    assert [len(c.pod_sandboxes) for c in chunks] == [2, 1]
    assert sorted(p.id for c in chunks for p in c.pod_sandboxes) == sorted(ids[:3])
    req = pb.StreamContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=ids[3]))
    chunks_c = list(rt.servicer.StreamContainers(req, CTX))
    assert [len(c.containers) for c in chunks_c] == [1]
    stats = list(rt.servicer.StreamContainerStats(pb.StreamContainerStatsRequest(), CTX))
    assert [len(c.container_stats) for c in stats] == [2, 2]
    pod_stats = list(rt.servicer.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest(), CTX))
    assert sum(len(c.pod_sandbox_stats) for c in pod_stats) == 4
    pod_metrics = list(
        rt.servicer.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest(), CTX)
    )
    assert [len(c.pod_sandbox_metrics) for c in pod_metrics] == [2, 2]


def test_stream_form_of_an_empty_list_is_one_empty_message(rt: Runtime) -> None:
    chunks = list(rt.servicer.StreamPodSandboxes(pb.StreamPodSandboxesRequest(), CTX))
    assert len(chunks) == 1 and not chunks[0].pod_sandboxes


# ---------------------------------------------------------------- layer lookup


def test_an_overlay_whiteout_hides_lower_etc_files(tmp_path: Path, layer: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a 0:0 character device (overlay whiteout) needs root")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "group", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    layers = (str(layer), str(upper))
    assert identity.effective_etc_file(layers, "group") is None
    assert identity.effective_etc_file(layers, "passwd") == str(layer / "etc" / "passwd")


def test_an_opaque_etc_hides_the_layers_below(tmp_path: Path, layer: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setting a trusted.* xattr (overlay opaque directory) needs root")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.setxattr(upper / "etc", "trusted.overlay.opaque", b"y")
    assert identity.effective_etc_file((str(layer), str(upper)), "passwd") is None
    assert identity.effective_etc_file((str(layer),), "passwd") == str(layer / "etc" / "passwd")
