"""Generated requests to every unary-request RPC of both CRI services of a real daemon.

Each RPC gets 20 requests, derandomized so that a run is repeatable and the tier stays
well under a minute on 2 cores; ``VMCRI_FUZZ_EXAMPLES=N`` asks for N random ones per RPC
instead (a deeper hunt, run by hand). Requests are drawn from the proto descriptors, or
are mutants of requests that work (tests/fuzz/strategies.py, seeds.py). A request that
decodes must never answer UNKNOWN, INTERNAL or time out, and the daemon must keep
running; the last test removes what the accepted requests made and checks that nothing
is left on the host.

A generated RunPodSandbox that passes the edge's checks is sent to the runc handler:
on the vm handler it would boot a VM under TCG (~10 s each). The vm backend's own
refusals (a VM larger than the host) are regular tests in tests/unit/handlers/vm. A failing
example found here is fixed and kept as a regular test in tests/unit/cri/.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzEnv, domains_naming, files_below, processes_naming
from tests.fuzz.seeds import seeds
from tests.fuzz.strategies import messages, mutations
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.cri.validate import check_request
from vmcri.errors import VmcriError
from vmcri.host.mounts import mount_points

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("VMCRI_FUZZ_EXAMPLES", "20"))
DERANDOMIZE = "VMCRI_FUZZ_EXAMPLES" not in os.environ
SKIPPED = {"GetContainerEvents": "an endless stream: it answers nothing until an event"}
FAULTS = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_TIMEOUT_S = 30


def unary_request_rpcs() -> list[MethodDescriptor]:
    return [
        method
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if not method.client_streaming and method.name not in SKIPPED
    ]


def call(env: FuzzEnv, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
    channel = env.daemon.channel()
    stubs: dict[str, Any] = {
        "RuntimeService": api_pb2_grpc.RuntimeServiceStub(channel),
        "ImageService": api_pb2_grpc.ImageServiceStub(channel),
    }
    rpc = getattr(stubs[method.containing_service.name], method.name)
    try:
        answer = rpc(request, timeout=CALL_TIMEOUT_S)
        if method.server_streaming:
            answer = list(answer)
        elif method.name == "RunPodSandbox":
            env.started.add(answer.pod_sandbox_id)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.code() not in FAULTS, (
            f"{method.name} answered {exc.code().name}: {exc.details()}\nrequest: {request}"
        )
        return exc.code()
    finally:
        channel.close()


def steer(method: MethodDescriptor, request: Message, attempt: int) -> Message:
    """A RunPodSandbox the edge accepts goes to runc, never boots a VM; it and a
    CreateContainer the edge accepts get their own attempt number, so that a mutant of
    a seed makes a new pod or container instead of repeating the seed's name."""
    if method.name not in ("RunPodSandbox", "CreateContainer"):
        return request
    try:
        check_request(request)
    except VmcriError:
        return request
    if method.name == "RunPodSandbox":
        request.runtime_handler = "runc"  # type: ignore[attr-defined]
    if request.config.HasField("metadata"):  # type: ignore[attr-defined]
        request.config.metadata.attempt = attempt  # type: ignore[attr-defined]
    return request


@pytest.mark.parametrize("method", unary_request_rpcs(), ids=lambda m: m.name)
def test_generated_requests_get_a_clear_answer(fuzz_env: FuzzEnv, method: MethodDescriptor) -> None:
    request_class = getattr(pb, method.input_type.name)
    fuzz_env.ensure_anchor()
    hints = fuzz_env.hints()
    generated = messages(method.input_type, request_class, hints)
    seeded = seeds(fuzz_env.tmp, fuzz_env.anchor, fuzz_env.container, fuzz_env.image)
    seeded_requests = seeded.get(method.name, [])
    requests = st.one_of(generated, *(mutations(seed, hints) for seed in seeded_requests))

    attempts: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(requests)
        attempts.append(len(attempts) + 1)
        call(fuzz_env, method, steer(method, request, attempts[-1]))
        assert fuzz_env.daemon.process.poll() is None, "the daemon died"

    run()


def test_every_rpc_of_both_services_is_fuzzed() -> None:
    names = {m.name for m in unary_request_rpcs()} | set(SKIPPED)
    for service in (pb.DESCRIPTOR.services_by_name[s] for s in ("RuntimeService", "ImageService")):
        assert {m.name for m in service.methods if not m.client_streaming} <= names


def test_nothing_is_left_behind(fuzz_env: FuzzEnv) -> None:
    runtime = fuzz_env.daemon.runtime()
    for sandbox in runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
        assert sandbox.id in fuzz_env.started | {fuzz_env.anchor}, "a refused request made a pod"
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
    assert runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items == []
    assert runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers == []
    # The vm backend's state dir is bound onto itself (shared) once, for its whole life.
    vm_state = fuzz_env.daemon.state / "backends" / "vm"
    assert set(mount_points(fuzz_env.tmp)) <= {*fuzz_env.baseline_mounts, vm_state}
    assert files_below(fuzz_env.daemon.state) <= fuzz_env.baseline_files
    assert set(processes_naming(fuzz_env.tmp)) <= set(fuzz_env.baseline_processes)
    assert domains_naming(fuzz_env.tmp) == []
    assert fuzz_env.daemon.runtime().Version(pb.VersionRequest(), timeout=10).runtime_name
