"""CRI contract details both handlers share (issue: CRI conformance), through the servicer.

The services are real, the backend a fake; a VM-like backend is the fake with the
features a VM reports (no host network, PID or IPC namespace to share).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cri.fakes import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.errors import InvalidArgument
from vmcri.handlers.base import HandlerFeatures, ImageInfo

CTX: Any = None
IMAGE = ImageInfo(id="sha256:" + "b" * 64, name="example.test/app:1", layer_dirs=(), config={})
VM_LIKE = HandlerFeatures(host_network=False, host_pid_ipc=False)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(tmp_path, IMAGE)


def _pod(rt: Runtime, namespaces: pb.NamespaceOption | None = None) -> str:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="ns"),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces)
        ),
    )
    request = pb.RunPodSandboxRequest(config=config)
    return str(rt.servicer.RunPodSandbox(request, CTX).pod_sandbox_id)


def _create(rt: Runtime, sandbox_id: str, **fields: Any) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="app:1"), **fields
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    return str(rt.servicer.CreateContainer(request, CTX).container_id)


def test_stop_of_unknown_container_and_sandbox_succeeds(rt: Runtime) -> None:
    # kubelet repeats these after restarts for things that are gone: the CRI makes them
    # idempotent, like the Remove calls.
    gone = "c" * 64
    rt.servicer.StopContainer(pb.StopContainerRequest(container_id=gone, timeout=1), CTX)
    rt.servicer.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=gone), CTX)
    assert rt.services.store.containers.list() == []


def test_a_writable_image_volume_is_refused_naming_the_field(rt: Runtime) -> None:
    mount = pb.Mount(container_path="/data", image=pb.ImageSpec(image="app:1"), readonly=False)
    sandbox_id = _pod(rt)
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.readonly: an image volume"):
        _create(rt, sandbox_id, mounts=[mount])
    assert rt.services.store.containers.list() == []


def test_container_status_reports_the_digest_of_an_image_volume(rt: Runtime) -> None:
    mounts = [
        pb.Mount(container_path="/etc/x", host_path="/tmp"),
        pb.Mount(container_path="/data", image=pb.ImageSpec(image="app:1"), readonly=True),
    ]
    container_id = _create(rt, _pod(rt), mounts=mounts)
    status = rt.servicer.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container_id), CTX
    ).status
    assert not status.mounts[0].HasField("image")
    assert status.mounts[1].image.image == "app:1"
    assert status.mounts[1].image.image_ref == IMAGE.id


@pytest.mark.parametrize("which", ["pid", "ipc"])
def test_a_vm_like_handler_refuses_host_pid_and_ipc_pods(rt: Runtime, which: str) -> None:
    rt.backend.handler_features = VM_LIKE
    namespaces = pb.NamespaceOption()
    setattr(namespaces, which, pb.NamespaceMode.NODE)
    with pytest.raises(InvalidArgument) as refused:
        _pod(rt, namespaces)
    assert f"namespace_options.{which}: NODE" in refused.value.message
    assert "runc handler" in refused.value.message
    assert rt.services.store.sandboxes.list() == []


@pytest.mark.parametrize("which", ["pid", "ipc", "network"])
def test_a_vm_like_handler_refuses_host_namespaces_of_a_container(rt: Runtime, which: str) -> None:
    sandbox_id = _pod(rt)
    rt.backend.handler_features = VM_LIKE
    namespaces = pb.NamespaceOption()
    setattr(namespaces, which, pb.NamespaceMode.NODE)
    security = pb.LinuxContainerSecurityContext(namespace_options=namespaces)
    with pytest.raises(InvalidArgument, match=rf"namespace_options\.{which}: NODE"):
        _create(rt, sandbox_id, linux=pb.LinuxContainerConfig(security_context=security))
    assert rt.services.store.containers.list() == []


def test_a_handler_that_can_share_them_gets_host_pid_and_ipc(rt: Runtime) -> None:
    features = dataclasses.replace(VM_LIKE, host_pid_ipc=True)
    rt.backend.handler_features = features
    namespaces = pb.NamespaceOption(pid=pb.NamespaceMode.NODE, ipc=pb.NamespaceMode.NODE)
    assert _pod(rt, namespaces)
