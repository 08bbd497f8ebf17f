"""A real daemon, a real registry with busybox, and pods of either handler for streaming tests."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import HostMounter
from vmcri.testing.registry import (
    LocalRegistry,
    push_busybox_image,
    registries_conf_for,
    registry_or_skip,
)

BOOT_TIMEOUT_S = 240


@dataclass
class StreamEnv:
    tmp: Path
    registry: LocalRegistry
    image: str
    daemon: RunningDaemon
    sandboxes: list[str] = field(default_factory=list)

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
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
        container_id = self.runtime.CreateContainer(request, timeout=120).container_id
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
        return container_id

    def exec_url(self, container_id: str, cmd: list[str], **flags: bool) -> str:
        request = pb.ExecRequest(container_id=container_id, cmd=cmd, **flags)
        return str(self.runtime.Exec(request, timeout=30).url)

    def port_forward_url(self, sandbox_id: str, ports: list[int]) -> str:
        request = pb.PortForwardRequest(pod_sandbox_id=sandbox_id, port=ports)
        return str(self.runtime.PortForward(request, timeout=30).url)


def wait_until(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("streaming")
    with registry_or_skip(tmp / "registry") as registry:
        push_busybox_image(registry.host, "test/busybox:1")
        image = f"{registry.host}/test/busybox:1"
        conf = registries_conf_for(tmp / "registries.conf", registry.host)
        (tmp / "config.toml").write_text(f'registries_conf = "{conf}"\n')
        daemon = start_daemon(tmp, config=tmp / "config.toml")
        stream_env = StreamEnv(tmp, registry, image, daemon)
        try:
            daemon.images().PullImage(
                pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120
            )
            yield stream_env
        finally:
            for sandbox_id in stream_env.sandboxes:
                try:
                    stream_env.runtime.StopPodSandbox(
                        pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
                    )
                    stream_env.runtime.RemovePodSandbox(
                        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
                    )
                except grpc.RpcError:
                    pass
            stop_daemon(stream_env.daemon)
            HostMounter().unmount_below(tmp)
