"""The gRPC edge as the daemon builds it (build_server), over a fake backend.

A refused request answers INVALID_ARGUMENT naming the field, for unary and streaming
RPCs alike, and reaches neither the store nor the backend; INTERNAL is what a real
fault of vmcri answers, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.cri.server import build_server
from vmcri.errors import HostCommandError
from vmcri.model import ImageInfo
from vmcri.store.records import SandboxRecord


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(
        tmp_path, ImageInfo(id="sha256:" + "a" * 64, name="app:1", layer_dirs=(), config={})
    )


@pytest.fixture
def stub(rt: Runtime, tmp_path: Path) -> Iterator[api_pb2_grpc.RuntimeServiceStub]:
    images: Any = object()  # no image RPC is called here
    socket = tmp_path / "cri.sock"
    server = build_server(rt.runtime, images, socket)
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield api_pb2_grpc.RuntimeServiceStub(channel)
    finally:
        channel.close()
        server.stop(None)


def status_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        result = call(request, timeout=10)
        if hasattr(result, "__iter__"):
            list(result)
    return info.value.code(), str(info.value.details())


def test_unknown_state_in_a_filter_is_invalid_argument_not_internal(
    stub: api_pb2_grpc.RuntimeServiceStub,
) -> None:
    # cast(): proto3 keeps enum numbers it does not declare; the stubs admit only declared ones.
    bad = pb.ContainerFilter(state=pb.ContainerStateValue(state=cast(pb.ContainerState, 999)))
    code, details = status_of(stub.ListContainers, pb.ListContainersRequest(filter=bad))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("filter.state.state: unknown value 999")
    code, details = status_of(stub.StreamContainers, pb.StreamContainersRequest(filter=bad))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    bad_pods = pb.PodSandboxFilter(
        state=pb.PodSandboxStateValue(state=cast(pb.PodSandboxState, 999))
    )
    code, details = status_of(stub.ListPodSandbox, pb.ListPodSandboxRequest(filter=bad_pods))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("filter.state.state:")


def test_negative_pod_memory_is_refused_before_the_backend(
    stub: api_pb2_grpc.RuntimeServiceStub, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(rt.backend, "run_sandbox", lambda sandbox: started.append(sandbox.id))
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=pb.LinuxPodSandboxConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=-8796093022048)
        ),
    )
    code, details = status_of(stub.RunPodSandbox, pb.RunPodSandboxRequest(config=config))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("config.linux.resources.memory_limit_in_bytes: -8796093022048")
    assert started == []
    assert rt.services.store.sandboxes.list() == []


def test_a_hostile_id_is_not_found_and_the_daemon_keeps_answering(
    stub: api_pb2_grpc.RuntimeServiceStub,
) -> None:
    request = pb.ContainerStatusRequest(container_id="../../../../etc/passwd")
    code, details = status_of(stub.ContainerStatus, request)
    assert code is grpc.StatusCode.NOT_FOUND
    assert details.startswith("container_id:")
    assert stub.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items == []


def test_a_real_fault_is_internal_and_logged_with_its_traceback(
    stub: api_pb2_grpc.RuntimeServiceStub,
    rt: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(sandbox: SandboxRecord) -> None:
        raise HostCommandError("ip link add: exit 2")

    monkeypatch.setattr(rt.backend, "run_sandbox", fail)
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    with caplog.at_level(logging.ERROR, logger="vmcri.cri.status"):
        code, details = status_of(stub.RunPodSandbox, pb.RunPodSandboxRequest(config=config))
    assert code is grpc.StatusCode.INTERNAL
    assert "ip link add" in details
    logged = [r for r in caplog.records if "RunPodSandbox failed" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert rt.services.store.sandboxes.list() == []


def test_an_unimplemented_rpc_answers_unimplemented_whatever_the_request(
    rt: Runtime, tmp_path: Path
) -> None:
    images: Any = object()
    socket = tmp_path / "cri.sock"
    server = build_server(rt.runtime, images, socket)
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        # StreamImages is left to the generated base: not validated, never reached.
        request = pb.StreamImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image="\x00")))
        code, details = status_of(api_pb2_grpc.ImageServiceStub(channel).StreamImages, request)
    finally:
        channel.close()
        server.stop(None)
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "StreamImages" in details


def test_checkpoint_of_a_handler_without_checkpoints_says_why(
    rt: Runtime, stub: api_pb2_grpc.RuntimeServiceStub, tmp_path: Path
) -> None:
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    sandbox_id = stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id
    request = pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(tmp_path))
    code, details = status_of(stub.CheckpointPod, request)
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "no checkpoint support" in details
    assert list(tmp_path.glob("vmcri-checkpoint*")) == []


def test_exec_and_port_forward_reach_the_streaming_service(
    stub: api_pb2_grpc.RuntimeServiceStub,
) -> None:
    code, details = status_of(stub.Exec, pb.ExecRequest(container_id="ab", cmd=["sh"], stdout=True))
    assert code is grpc.StatusCode.NOT_FOUND
    assert details.startswith("container_id 'ab': no such container")
    code, details = status_of(
        stub.PortForward, pb.PortForwardRequest(pod_sandbox_id="ab", port=[0])
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("port[0]:")
