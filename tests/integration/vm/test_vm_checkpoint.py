"""CheckpointPod of a VM pod through the real daemon and real QEMU, this session's form:
refused FAILED_PRECONDITION while the pod's domain exports its rootfs share, naming it;
nothing is written and the pod's container keeps counting.

(QEMU itself refuses to migrate a guest with a mounted 9p export; the save path that
takes over once the share is gone is measured by bench/checkpoint_bench.py and unit
tested against a QMP fake, tests/unit/vm/test_snapshot.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

COUNTER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("vmckpt"), wait_template=False) as vm_env:
        yield vm_env


def _count(env: VmEnv, pod: str) -> int:
    lines = [line.split()[-1] for line in env.log_of(pod, "counter").splitlines() if line]
    return int(lines[-1]) if lines else 0


def test_a_vm_pod_with_its_rootfs_share_is_refused_naming_it_and_counts_on(
    env: VmEnv, tmp_path: Path
) -> None:
    sandbox_id, pod = env.run_pod("counter")
    container = env.create(sandbox_id, pod, "counter", COUNTER)
    env.start(container)
    wait_for(lambda: _count(env, "counter") >= 2, timeout=60, what="the counter to count")

    with pytest.raises(grpc.RpcError) as info:
        env.runtime.CheckpointPod(
            pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(tmp_path)), timeout=120
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = str(info.value.details())
    assert "exports a host directory to the guest" in details
    assert "(9p)" in details or "(virtio-fs)" in details
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(grpc.RpcError) as info:
        env.runtime.CheckpointContainer(
            pb.CheckpointContainerRequest(
                container_id=container, location=str(tmp_path / "counter.tar")
            ),
            timeout=120,
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert list(tmp_path.iterdir()) == []

    # The pod was never paused for nothing: it still runs and counts on.
    seen = _count(env, "counter")
    wait_for(lambda: _count(env, "counter") > seen, timeout=60, what="the counter to go on")
    assert env.status(container).state == pb.CONTAINER_RUNNING
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
