"""Shared by the node-service tests: a registry with busybox, and one runc pod's life."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.push import push_busybox_image
from tests.support.registry import registries_conf_for, registry_or_skip
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

HANDLER = "runc"
IMAGE_NAME = "test/busybox:1"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


@dataclass(frozen=True)
class Busybox:
    image: str
    registries_conf: Path


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Busybox]:
    yield from serve_busybox(tmp_path_factory)


def serve_busybox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Busybox]:
    """A loopback registry holding busybox, for as long as the generator runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("registry")
    with registry_or_skip(tmp / "registry") as registry:
        push_busybox_image(registry.host, IMAGE_NAME)
        conf = registries_conf_for(tmp / "registries.conf", registry.host)
        yield Busybox(f"{registry.host}/{IMAGE_NAME}", conf)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_runc_pod(
    runtime: api_pb2_grpc.RuntimeServiceStub,
    images: api_pb2_grpc.ImageServiceStub,
    image: str,
    logs: Path,
    created: list[str],
    command: list[str] | None = None,
    pod_name: str = "svc",
) -> str:
    """Pull ``image``, run a runc pod with one container (default: a sleeper).

    The pod's ID goes into ``created`` as soon as it exists, so the caller removes it
    even when a later step fails. Returns the container's ID.
    """
    images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120)
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=pod_name, uid=f"uid-{pod_name}", namespace="service"),
        log_directory=str(logs),
    )
    sandbox_id = runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod, runtime_handler=HANDLER), timeout=60
    ).pod_sandbox_id
    created.append(sandbox_id)
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="sleeper"),
        image=pb.ImageSpec(image=image),
        command=command or SLEEPER,
        log_path="sleeper.log",
    )
    container_id = runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod),
        timeout=60,
    ).container_id
    runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return str(container_id)


def remove_pods(runtime: api_pb2_grpc.RuntimeServiceStub, created: list[str]) -> None:
    import grpc

    for sandbox_id in created:
        with contextlib.suppress(grpc.RpcError):
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
            runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
            )
    created.clear()
