"""A real daemon with both handlers, busybox from a loopback registry, and one pod per handler.

The CRI conformance tests (issue: CRI conformance) run each behaviour against the
runc handler and the VM handler through the gRPC API kubelet uses. Under software
emulation a VM boots in 15-40 s, so the whole package shares one privileged pod per
handler and each test makes its own containers in it.
"""

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
HANDLERS = ("runc", "vm")


@dataclass
class ConformanceEnv:
    tmp: Path
    registry: LocalRegistry
    image: str
    daemon: RunningDaemon
    sandboxes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()


@dataclass
class Pod:
    """One handler's pod, and what creating containers in it takes."""

    env: ConformanceEnv
    handler: str
    id: str
    config: pb.PodSandboxConfig

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.env.runtime

    def create(
        self,
        name: str,
        command: list[str],
        security: pb.LinuxContainerSecurityContext | None = None,
        mounts: list[pb.Mount] | None = None,
    ) -> str:
        security = security or pb.LinuxContainerSecurityContext()
        if not security.HasField("namespace_options"):  # kubelet's default, as the pod's
            security.namespace_options.pid = pb.NamespaceMode.CONTAINER
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=self.env.image),
            command=command,
            log_path=f"{name}.log",
            linux=pb.LinuxContainerConfig(security_context=security),
            mounts=mounts or [],
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=self.id, config=config, sandbox_config=self.config
        )
        return str(self.runtime.CreateContainer(request, timeout=120).container_id)

    def run(
        self,
        name: str,
        command: list[str],
        security: pb.LinuxContainerSecurityContext | None = None,
        mounts: list[pb.Mount] | None = None,
    ) -> str:
        container_id = self.create(name, command, security, mounts)
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
        return container_id

    def exec(self, container_id: str, cmd: list[str], timeout: int = 60) -> pb.ExecSyncResponse:
        request = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        response: pb.ExecSyncResponse = self.runtime.ExecSync(request, timeout=timeout + 60)
        return response

    def remove(self, container_id: str) -> None:
        request = pb.RemoveContainerRequest(container_id=container_id)
        self.runtime.RemoveContainer(request, timeout=120)


@pytest.fixture(scope="package")
def conformance_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConformanceEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts, libvirt)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("conformance")
    with daemon_with_busybox(tmp, ConformanceEnv) as env:
        yield env


class Pods:
    """One privileged pod per handler (privileged containers need one), made on first use."""

    def __init__(self, env: ConformanceEnv) -> None:
        self.env = env
        self._pods: dict[str, Pod] = {}

    def get(self, handler: str) -> Pod:
        if handler not in self._pods:
            self._pods[handler] = self._run(handler)
        return self._pods[handler]

    def _run(self, handler: str) -> Pod:
        name = f"conf-{handler}"
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="conformance"),
            hostname=name,
            log_directory=str(self.env.tmp / "logs" / name),
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(
                    privileged=True,
                    # As kubelet asks by default: PID 1 of a container is its own process.
                    namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER),
                )
            ),
        )
        run = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        sandbox_id = self.env.runtime.RunPodSandbox(run, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
        self.env.sandboxes.append(sandbox_id)  # removed with the daemon's teardown
        return Pod(self.env, handler, sandbox_id, config)


@pytest.fixture(scope="package")
def pods(conformance_env: ConformanceEnv) -> Pods:
    return Pods(conformance_env)


@pytest.fixture(params=HANDLERS)
def pod(request: pytest.FixtureRequest, pods: Pods) -> Pod:
    """The parameter's handler's pod."""
    return pods.get(str(request.param))


@pytest.fixture
def vm_pod(pods: Pods) -> Pod:
    """The VM handler's pod, for what only a VM pod has."""
    return pods.get("vm")
