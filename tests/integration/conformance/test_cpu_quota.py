"""A cpu_quota of -1 is "no quota", as kubelet sends it, on both handlers.

kubelet lifts the CFS quota of a container with exclusive CPUs by sending
``cpu_quota: -1`` (DisableCPUQuotaWithExclusiveCPUs), at creation and in
UpdateContainerResources; the container's cgroup then reads ``max`` as under
containerd and CRI-O, and the call is not refused.
"""

from __future__ import annotations

import pytest

from tests.integration.conformance.conftest import Pod
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

# The container's own cgroup as runc mounts it: v2 in the guest, v1 or v2 on the host; a
# v1 quota of -1 is v2's "max".
READ_CPU_MAX = [
    "sh",
    "-c",
    "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; else "
    "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    " | sed 's/^-1 /max /'; fi",
]


def _create(pod: Pod, name: str, resources: pb.LinuxContainerResources) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=pod.env.image),
        command=["sleep", "600"],
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(
            resources=resources,
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER)
            ),
        ),
    )
    request = pb.CreateContainerRequest(
        pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config
    )
    container_id = str(pod.runtime.CreateContainer(request, timeout=120).container_id)
    pod.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return container_id


def _cpu_max(pod: Pod, container_id: str) -> str:
    answer = pod.exec(container_id, READ_CPU_MAX)
    assert answer.exit_code == 0, answer.stderr
    return answer.stdout.decode().strip()


def test_a_quota_of_minus_one_is_no_cpu_limit_at_creation_and_in_an_update(pod: Pod) -> None:
    unlimited = pb.LinuxContainerResources(cpu_period=100_000, cpu_quota=-1)
    container_id = _create(pod, "no-quota", unlimited)
    try:
        assert _cpu_max(pod, container_id) == "max 100000"
        limited = pb.LinuxContainerResources(cpu_period=100_000, cpu_quota=50_000)
        update = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=limited)
        pod.runtime.UpdateContainerResources(update, timeout=60)
        assert _cpu_max(pod, container_id) == "50000 100000"
        update = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=unlimited)
        pod.runtime.UpdateContainerResources(update, timeout=60)
        assert _cpu_max(pod, container_id) == "max 100000"
    finally:
        pod.runtime.StopContainer(pb.StopContainerRequest(container_id=container_id, timeout=0))
        pod.remove(container_id)
