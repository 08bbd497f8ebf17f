"""A real daemon, a loopback registry with busybox, and runc pods, for CRI-level tests."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.integration.harness import daemon_with_busybox
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

HANDLER = "runc"
# Exits promptly on SIGTERM, so StopContainer does not wait for its timeout.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


@dataclass
class CriEnv:
    tmp: Path
    image: str
    daemon: RunningDaemon
    sandboxes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """Kill the daemon with ``sig`` and start a new one on the same state."""
        stop_daemon(self.daemon, sig)
        self.daemon = start_daemon(self.tmp, config=self.tmp / "config.toml")

    def run_pod(self, name: str, labels: dict[str, str] | None = None) -> str:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="cri"),
            log_directory=str(self.tmp / "logs" / name),
            labels=labels or {},
        )
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=HANDLER)
        sandbox_id = str(self.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id)
        self.sandboxes.append(sandbox_id)
        return sandbox_id

    def create(
        self,
        sandbox_id: str,
        name: str,
        command: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=self.image),
            command=command or SLEEPER,
            log_path=f"{name}.log",
            labels=labels or {},
        )
        request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
        return str(self.runtime.CreateContainer(request, timeout=60).container_id)

    def start(self, container_id: str) -> None:
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)

    def status(self, container_id: str) -> pb.ContainerStatus:
        request = pb.ContainerStatusRequest(container_id=container_id)
        response: pb.ContainerStatusResponse = self.runtime.ContainerStatus(request, timeout=30)
        return response.status


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("cri")
    with daemon_with_busybox(tmp, lambda t, _registry, i, d: CriEnv(t, i, d)) as cri_env:
        yield cri_env
