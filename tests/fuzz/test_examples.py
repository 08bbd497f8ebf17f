"""Issue 15's examples against the real daemon: refused with the field's name, nothing started.

Before validation at the edge these answered INTERNAL, and the negative memory limit
reached libvirt (``XML error: Invalid value '-8796093022048'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import grpc
import pytest
from google.protobuf.message import Message

from tests.fuzz.conftest import FuzzEnv, domains_naming, files_below
from tests.fuzz.seeds import pod_config
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def refused(call: Callable[..., object], request: Message) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value.code(), str(info.value.details())


def test_an_unknown_state_in_a_filter_is_invalid_argument(fuzz_env: FuzzEnv) -> None:
    # cast(): proto3 keeps enum numbers it does not declare; the stubs admit only declared ones.
    runtime = fuzz_env.daemon.runtime()
    containers = pb.ContainerFilter(
        state=pb.ContainerStateValue(state=cast(pb.ContainerState, 999))
    )
    code, details = refused(runtime.ListContainers, pb.ListContainersRequest(filter=containers))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "filter.state.state")
    pods = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=cast(pb.PodSandboxState, 999)))
    code, details = refused(runtime.ListPodSandbox, pb.ListPodSandboxRequest(filter=pods))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "filter.state.state")


@pytest.mark.parametrize(
    ("memory", "why"),
    [
        (-8796093022048, "out of range"),  # the edge: negative
        (1 << 50, "the host has"),  # the vm backend: 1 PiB is more than this host's MemTotal
    ],
)
def test_a_vm_pod_with_memory_no_vm_can_have_starts_no_vm(
    fuzz_env: FuzzEnv, memory: int, why: str
) -> None:
    config = pod_config(fuzz_env.tmp, f"too-big-{memory & 0xFFFF}")
    config.linux.resources.memory_limit_in_bytes = memory
    request = pb.RunPodSandboxRequest(config=config, runtime_handler="vm")
    code, details = refused(fuzz_env.daemon.runtime().RunPodSandbox, request)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("config.linux.resources.memory_limit_in_bytes:")
    assert why in details
    assert domains_naming(fuzz_env.tmp) == []
    listed = fuzz_env.daemon.runtime().ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
    assert config.metadata.name not in [s.metadata.name for s in listed.items]
    vm_pods = fuzz_env.daemon.state / "backends" / "vm"
    assert not vm_pods.exists() or sorted(p.name for p in vm_pods.iterdir()) <= ["sockets"]


TEARDOWN_IDS = [
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",  # a UUID
    "a" * 65,
    "../../state",
    "x/../..",
    "\u00e9t\u00e9-\U0001f600",
]


@pytest.mark.parametrize("gone", TEARDOWN_IDS)
def test_stop_and_remove_of_an_id_of_any_shape_succeed_and_touch_nothing(
    fuzz_env: FuzzEnv, gone: str
) -> None:
    # CRI: the four teardown RPCs are idempotent; they answered NOT_FOUND for these.
    runtime = fuzz_env.daemon.runtime()
    before = files_below(fuzz_env.daemon.state)
    runtime.StopContainer(pb.StopContainerRequest(container_id=gone, timeout=1), timeout=30)
    runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=gone), timeout=30)
    runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=gone), timeout=30)
    runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=gone), timeout=30)
    assert files_below(fuzz_env.daemon.state) == before
    status = runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=fuzz_env.anchor), timeout=30
    ).status
    assert status.state == pb.SANDBOX_READY
    code, details = refused(
        runtime.ContainerStatus, pb.ContainerStatusRequest(container_id=gone)
    )  # everywhere else such an ID is still refused
    assert code is grpc.StatusCode.NOT_FOUND and details.startswith("container_id:")


def test_a_teardown_without_its_id_is_invalid_argument(fuzz_env: FuzzEnv) -> None:
    runtime = fuzz_env.daemon.runtime()
    code, details = refused(runtime.RemovePodSandbox, pb.RemovePodSandboxRequest())
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "pod_sandbox_id: must not be empty",
    )
    code, details = refused(runtime.StopContainer, pb.StopContainerRequest(timeout=1))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "container_id: must not be empty")
