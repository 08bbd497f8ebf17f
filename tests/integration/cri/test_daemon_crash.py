"""kill -9 of the daemon: a running runc container survives and stays manageable."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.cri.conftest import CriEnv
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def test_running_container_survives_daemon_sigkill(env: CriEnv) -> None:
    sandbox_id = env.run_pod("crash")
    container_id = env.create(sandbox_id, "app")
    env.start(container_id)
    before = env.status(container_id)
    assert before.state == pb.CONTAINER_RUNNING
    old_pid = env.daemon.process.pid

    env.restart(signal.SIGKILL)
    assert env.daemon.process.pid != old_pid
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)

    after = env.status(container_id)
    assert after.state == pb.CONTAINER_RUNNING
    assert after.started_at == before.started_at
    pod = env.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
    ).status
    assert pod.state == pb.SANDBOX_READY

    result = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", "echo alive"], timeout=30),
        timeout=60,
    )
    assert (result.exit_code, result.stdout) == (0, b"alive\n")

    env.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container_id, timeout=10), timeout=60
    )
    stopped = env.status(container_id)
    assert stopped.state == pb.CONTAINER_EXITED
    assert stopped.exit_code == 0  # the trap ran: SIGTERM reached the container
    env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id), timeout=60)
    listed = env.runtime.ListContainers(
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id)), timeout=30
    ).containers
    assert list(listed) == []
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
