"""CheckpointPod, RestorePod and CheckpointContainer through the real daemon (runc pods).

On this node the runc handler cannot checkpoint (CRIU is absent, or `criu check` fails on
the kernel): both RPCs say so, UNIMPLEMENTED with the reason, and write nothing; the pod
runs on. A path that is not an existing directory is refused naming ``path``. A
checkpoint directory copied in from elsewhere is verified before anything: a tampered
one is refused INVALID_ARGUMENT, and no sandbox, container or file is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.cri.conftest import CriEnv
from tests.support.checkpoints import write_checkpoint
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

COUNTER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"]


@pytest.fixture(scope="module")
def counting(env: CriEnv) -> Iterator[tuple[str, str]]:
    sandbox = env.run_pod("ckpt-counter")
    container = env.create(sandbox, "counter", command=COUNTER)
    env.start(container)
    yield sandbox, container
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=60)


def _code(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)  # type: ignore[operator]
    return info.value.code(), str(info.value.details())


def _pods(env: CriEnv) -> set[str]:
    listed = env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
    return {p.id for p in listed}


def test_a_runc_pod_checkpoint_is_refused_with_criu_s_reason_and_writes_nothing(
    env: CriEnv, counting: tuple[str, str], tmp_path: Path
) -> None:
    sandbox, container = counting
    code, details = _code(
        env.runtime.CheckpointPod,
        pb.CheckpointPodRequest(pod_sandbox_id=sandbox, path=str(tmp_path)),
    )
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "CRIU" in details
    code, details = _code(
        env.runtime.CheckpointContainer,
        pb.CheckpointContainerRequest(container_id=container, location=str(tmp_path / "c.tar")),
    )
    assert code is grpc.StatusCode.UNIMPLEMENTED and "CRIU" in details
    assert list(tmp_path.iterdir()) == []
    assert env.status(container).state == pb.CONTAINER_RUNNING
    status = env.runtime.Status(pb.StatusRequest(), timeout=30).status
    condition = {c.type: c for c in status.conditions}["PodCheckpointRestore"]
    assert "runc: " in condition.message and "CRIU" in condition.message


@pytest.mark.parametrize("kind", ["missing", "file", "symlink"])
def test_a_path_that_is_not_an_existing_directory_is_refused(
    env: CriEnv, counting: tuple[str, str], tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "target"
    if kind == "file":
        path.write_text("")
    elif kind == "symlink":
        (tmp_path / "real").mkdir()
        os.symlink(tmp_path / "real", path)
    code, details = _code(
        env.runtime.RestorePod,
        pb.RestorePodRequest(
            path=str(path),
            config=pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name="r", uid="r", namespace="cri")
            ),
        ),
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("path: ")


@pytest.mark.parametrize("tamper", ["flip", "truncate", "none"])
def test_a_copied_checkpoint_is_verified_before_use_and_a_refusal_leaves_nothing(
    env: CriEnv, counting: tuple[str, str], tmp_path: Path, tamper: str
) -> None:
    directory = write_checkpoint(
        tmp_path,
        {"state-counter": b"x" * 65536},
        handler="runc",
        backend="runc",
        containers=("counter",),
    )
    if tamper == "flip":
        data = bytearray((directory / "state-counter").read_bytes())
        data[7] ^= 0x20
        (directory / "state-counter").write_bytes(bytes(data))
    elif tamper == "truncate":
        os.truncate(directory / "state-counter", 4096)
    before = _pods(env)
    request = pb.RestorePodRequest(
        path=str(tmp_path),
        config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="restored", uid="uid-restored", namespace="cri"),
            log_directory=str(tmp_path / "logs"),
        ),
        container_configs=[
            pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="counter"),
                image=pb.ImageSpec(image=env.image),
                log_path="counter.log",
            )
        ],
    )
    code, details = _code(env.runtime.RestorePod, request)
    if tamper == "none":
        # It verified; the runc handler then says it cannot restore, still before any work.
        assert code is grpc.StatusCode.UNIMPLEMENTED and "CRIU" in details
    else:
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("path: ") and "state-counter" in details
    assert _pods(env) == before
    assert not (tmp_path / "logs").exists()
