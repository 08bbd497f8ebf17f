"""ContainerStatus user/stop_signal/resources and pod metrics for a real runc container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.cri.conftest import SLEEPER, CriEnv
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def test_status_reports_user_stop_signal_and_updated_resources(env: CriEnv) -> None:
    sandbox_id = env.run_pod("status")
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=env.image),
        command=SLEEPER,
        stop_signal=pb.SIGNAL_SIGINT,
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=1234),
                run_as_group=pb.Int64Value(value=4321),
                supplemental_groups=[77],
            )
        ),
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    container_id = env.runtime.CreateContainer(request, timeout=60).container_id
    env.start(container_id)
    ids = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=["id"], timeout=30), timeout=60
    ).stdout.decode()
    status = env.status(container_id)
    user = status.user.linux
    assert (user.uid, user.gid) == (1234, 4321)
    assert set(user.supplemental_groups) >= {4321, 77}
    assert "uid=1234" in ids and "gid=4321" in ids and "77" in ids  # what the process really got
    assert status.stop_signal == pb.SIGNAL_SIGINT

    linux = pb.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=96 << 20)
    env.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux), timeout=30
    )
    got = env.status(container_id).resources.linux
    assert (got.cpu_shares, got.memory_limit_in_bytes) == (256, 96 << 20)


def test_pod_metrics_for_a_running_container(env: CriEnv) -> None:
    sandbox_id = env.run_pod("metrics")
    container_id = env.create(sandbox_id, "app")
    env.start(container_id)
    descriptors = env.runtime.ListMetricDescriptors(
        pb.ListMetricDescriptorsRequest(), timeout=30
    ).descriptors
    keys = {d.name: list(d.label_keys) for d in descriptors}
    response = env.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=30)
    [pod] = [m for m in response.pod_metrics if m.pod_sandbox_id == sandbox_id]
    [container] = pod.container_metrics
    assert container.container_id == container_id
    by_name = {m.name: m for m in container.metrics}
    working_set = by_name["container_memory_working_set_bytes"]
    assert working_set.value.value > 0 and working_set.timestamp > 0
    assert by_name["container_processes"].value.value >= 1
    for metric in container.metrics:
        assert len(metric.label_values) == len(keys[metric.name])
        assert dict(zip(keys[metric.name], metric.label_values, strict=True))["pod"] == "metrics"
    pod_ws = next(m for m in pod.metrics if m.name == "container_memory_working_set_bytes")
    assert pod_ws.value.value >= working_set.value.value


V1_BLKIO = Path("/sys/fs/cgroup/blkio")
NO_LIMIT_BPS = 1 << 40  # a throttle rule that never throttles (1 TiB/s)


def _whole_disk(path: Path) -> str:
    """``major:minor`` of the disk (not the partition) that holds ``path``."""
    dev = os.stat(path).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if (block / "partition").exists():
        block = block.resolve().parent
    return (block / "dev").read_text().strip()


def _count_block_io(container_id: str, disk: str) -> None:
    """On cgroup v1 the kernel charges block I/O to a blkio group only where a throttle
    rule applies (the root reads "Total 0" here): give the container's group a rule that
    never throttles, as an operator's I/O limit would, so its counters run."""
    if not (V1_BLKIO / "blkio.throttle.io_service_bytes_recursive").exists():
        return  # cgroup v2: io.stat counts without rules
    [group] = [p for p in V1_BLKIO.rglob(container_id) if p.is_dir()]
    for rule in ("read_bps_device", "write_bps_device"):
        (group / f"blkio.throttle.{rule}").write_text(f"{disk} {NO_LIMIT_BPS}\n")


def test_block_io_metrics_name_the_device_its_numbers_and_the_operation(env: CriEnv) -> None:
    sandbox_id = env.run_pod("blkio")
    # Direct I/O, past the page cache: charged to the container's cgroup on cgroup v1 too
    # (whose buffered writeback is the kernel's, not the container's). It starts once the
    # test has made the kernel count (the file /go).
    io = (
        "while [ ! -e /go ]; do sleep 0.05; done; "
        "dd if=/dev/zero of=/f bs=64k count=32 oflag=direct; "
        "dd if=/f of=/dev/null bs=64k iflag=direct"
    )
    container_id = env.create(sandbox_id, "app", command=["sh", "-c", f"{io}; {SLEEPER[2]}"])
    env.start(container_id)
    keys = {
        d.name: list(d.label_keys)
        for d in env.runtime.ListMetricDescriptors(
            pb.ListMetricDescriptorsRequest(), timeout=30
        ).descriptors
    }
    assert keys["container_blkio_device_usage_total"][6:] == [
        "device", "major", "minor", "operation"
    ]  # fmt: skip

    def blkio() -> dict[tuple[str, ...], int]:
        response = env.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=30)
        [pod] = [m for m in response.pod_metrics if m.pod_sandbox_id == sandbox_id]
        [container] = pod.container_metrics
        return {
            tuple(m.label_values[6:]): m.value.value
            for m in container.metrics
            if m.name == "container_blkio_device_usage_total"
        }

    disk = _whole_disk(env.tmp)
    _count_block_io(container_id, disk)
    env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=["touch", "/go"], timeout=30), timeout=60
    )
    # Sampled while dd runs, a count may be partial: wait for all of the writes.
    series = wait_for(
        lambda: {k: v for k, v in blkio().items() if k[3] == "Write" and v >= 32 * 64 * 1024},
        60,
        "block writes counted",
    )
    (device, major, minor, _), value = next(iter(series.items()))
    assert f"{major}:{minor}" == disk
    assert value >= 32 * 64 * 1024
    assert device == "" or device.startswith("/dev/")
    reads = wait_for(lambda: blkio().get((device, major, minor, "Read"), 0) >= 32 * 64 * 1024,
                     60, "block reads counted")  # fmt: skip
    assert reads
