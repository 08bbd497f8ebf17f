"""A container the image cannot run (its executable or working directory is missing):
refused with FAILED_PRECONDITION naming the cause, not INTERNAL, and nothing left."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.integration.cri.conftest import CriEnv
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        ({"command": ["/no/such/binary"]}, "/no/such/binary"),
        ({"command": ["no-such-command"]}, "no-such-command"),
        ({"command": ["/etc"]}, "/etc"),
        ({"command": ["sh"], "working_dir": "/etc/passwd"}, "/etc/passwd"),
    ],
)
def test_a_process_the_image_cannot_run_is_failed_precondition(
    env: CriEnv, fields: dict[str, Any], cause: str
) -> None:
    sandbox_id = env.run_pod(f"refused-{len(env.sandboxes)}")
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image=env.image), **fields
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    with pytest.raises(grpc.RpcError) as info:
        container_id = env.runtime.CreateContainer(request, timeout=60).container_id
        env.start(container_id)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    details = str(info.value.details())
    assert cause in details and "runc create refused it" in details
    left = pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id))
    assert env.runtime.ListContainers(left, timeout=30).containers == []
