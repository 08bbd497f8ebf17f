"""A real daemon, a real registry with busybox, and pods of either handler for streaming tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import RunningDaemon
from tests.integration.harness import daemon_with_busybox
from tests.support.registry import LocalRegistry
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

BOOT_TIMEOUT_S = 240


@dataclass
class StreamEnv:
    tmp: Path
    registry: LocalRegistry
    image: str
    daemon: RunningDaemon
    sandboxes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    def run_pod(self, name: str, handler: str) -> tuple[str, pb.PodSandboxConfig]:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="stream"),
            hostname=name,
            log_directory=str(self.tmp / "logs" / name),
        )
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        sandbox_id = self.runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
        self.sandboxes.append(sandbox_id)
        return sandbox_id, config

    def run_container(
        self, sandbox_id: str, pod: pb.PodSandboxConfig, name: str, command: list[str]
    ) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=self.image),
            command=command,
            log_path=f"{name}.log",
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
        )
        created: pb.CreateContainerResponse = self.runtime.CreateContainer(request, timeout=120)
        self.runtime.StartContainer(
            pb.StartContainerRequest(container_id=created.container_id), timeout=60
        )
        return created.container_id

    def exec_url(self, container_id: str, cmd: list[str], **flags: bool) -> str:
        request = pb.ExecRequest(container_id=container_id, cmd=cmd, **flags)
        return str(self.runtime.Exec(request, timeout=30).url)

    def port_forward_url(self, sandbox_id: str, ports: list[int]) -> str:
        request = pb.PortForwardRequest(pod_sandbox_id=sandbox_id, port=ports)
        return str(self.runtime.PortForward(request, timeout=30).url)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("streaming")
    with daemon_with_busybox(tmp, StreamEnv) as stream_env:
        yield stream_env
