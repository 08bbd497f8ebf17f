"""Classes and shares of CRI calls: kubelet's polls are never limited, slow calls are
counted per pod and node-wide and refused at once over a bound, and a stop that would be
a no-op is never refused (the CRI forbids an error there)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import grpc
import pytest

from vmcri.api import api_pb2 as pb
from vmcri.config import Config, CriConfig
from vmcri.cri.admission import AdmissionInterceptor
from vmcri.cri.call_classes import CLASSES, NODE, POLL, Admit, CallClass, classify
from vmcri.cri.call_shares import CallShares
from vmcri.errors import ConfigError, ResourceExhausted
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState

R = "/runtime.v1.RuntimeService/"
I = "/runtime.v1.ImageService/"  # noqa: E741
POD_A = "a" * 64
POD_B = "b" * 64


class Records:
    def __init__(self) -> None:
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}

    def add_pod(self, sandbox_id: str, state: SandboxState = SandboxState.READY) -> None:
        config = PodConfig(metadata=Metadata(name=sandbox_id[:4], uid=sandbox_id[:4]))
        self.sandboxes[sandbox_id] = SandboxRecord(sandbox_id, "runc", "runc", config, state)

    def add_container(
        self, container_id: str, sandbox_id: str, state: ContainerState = ContainerState.RUNNING
    ) -> None:
        config = ContainerConfig(metadata=Metadata(name=container_id[:4]), image="img")
        self.containers[container_id] = ContainerRecord(
            container_id, sandbox_id, config, "sha256:x", "img", state
        )

    def container(self, container_id: str) -> ContainerRecord | None:
        return self.containers.get(container_id)

    def sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return self.sandboxes.get(sandbox_id)

    def containers_of(self, sandbox_id: str) -> Sequence[ContainerRecord]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]


@pytest.fixture
def records() -> Records:
    r = Records()
    r.add_pod(POD_A)
    r.add_pod(POD_B)
    r.add_container("c" * 64, POD_A)
    r.add_container("d" * 64, POD_B)
    r.add_container("e" * 64, POD_A, ContainerState.EXITED)
    return r


def test_every_rpc_of_the_proto_has_a_class() -> None:
    names = {
        f"{service.full_name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert names == set(CLASSES)


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("Version", pb.VersionRequest()),
        ("Status", pb.StatusRequest()),
        ("ListPodSandbox", pb.ListPodSandboxRequest()),
        ("ListContainers", pb.ListContainersRequest()),
        ("ListContainerStats", pb.ListContainerStatsRequest()),
        ("ContainerStatus", pb.ContainerStatusRequest(container_id="c" * 64)),
        ("RuntimeConfig", pb.RuntimeConfigRequest()),
        ("Exec", pb.ExecRequest(container_id="c" * 64)),
        ("PortForward", pb.PortForwardRequest(pod_sandbox_id=POD_A)),
    ],
)
def test_kubelets_polls_are_never_counted(records: Records, method: str, request_: Any) -> None:
    assert classify(R + method, request_, records) == POLL


def test_image_fs_info_is_a_poll(records: Records) -> None:
    assert classify(I + "ImageFsInfo", pb.ImageFsInfoRequest(), records) == POLL


def test_slow_calls_are_counted_against_their_pod(records: Records) -> None:
    work = CallClass.WORK
    exec_sync = pb.ExecSyncRequest(container_id="d" * 64, timeout=3600)
    assert classify(R + "ExecSync", exec_sync, records) == Admit(work, POD_B)
    create = pb.CreateContainerRequest(pod_sandbox_id=POD_A)
    assert classify(R + "CreateContainer", create, records) == Admit(work, POD_A)
    run = pb.RunPodSandboxRequest(
        config=pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="n", uid="u1"))
    )
    assert classify(R + "RunPodSandbox", run, records) == Admit(work, "uid:u1")
    pull = pb.PullImageRequest(sandbox_config=run.config)
    assert classify(I + "PullImage", pull, records) == Admit(work, "uid:u1")
    assert classify(I + "PullImage", pb.PullImageRequest(), records) == Admit(work, NODE)


def test_a_call_naming_nothing_that_exists_answers_not_found_unlimited(
    records: Records,
) -> None:
    missing = pb.ExecSyncRequest(container_id="f" * 64)
    assert classify(R + "ExecSync", missing, records) == POLL
    stop = pb.StopPodSandboxRequest(pod_sandbox_id="f" * 64)
    assert classify(R + "StopPodSandbox", stop, records) == POLL


def test_stopping_what_is_already_stopped_is_never_limited(records: Records) -> None:
    teardown = CallClass.TEARDOWN
    stop_live = pb.StopContainerRequest(container_id="c" * 64, timeout=30)
    assert classify(R + "StopContainer", stop_live, records) == Admit(teardown, POD_A)
    stop_exited = pb.StopContainerRequest(container_id="e" * 64)
    assert classify(R + "StopContainer", stop_exited, records) == POLL
    stop_pod = pb.StopPodSandboxRequest(pod_sandbox_id=POD_A)
    assert classify(R + "StopPodSandbox", stop_pod, records) == Admit(teardown, POD_A)
    records.add_pod(POD_A, SandboxState.NOTREADY)
    records.add_container("c" * 64, POD_A, ContainerState.EXITED)
    assert classify(R + "StopPodSandbox", stop_pod, records) == POLL


def test_an_rpc_unknown_to_the_table_is_bounded_work(records: Records) -> None:
    assert classify(R + "SomethingNew", pb.VersionRequest(), records) == Admit(CallClass.WORK, NODE)


def test_a_pod_over_its_share_is_refused_naming_the_pod_and_key() -> None:
    shares = CallShares(CriConfig(max_slow_calls=10, max_slow_calls_per_pod=3))
    a = Admit(CallClass.WORK, POD_A)
    for _ in range(3):
        shares.enter(R + "ExecSync", a)
    with pytest.raises(ResourceExhausted) as refused:
        shares.enter(R + "ExecSync", a)
    assert POD_A in refused.value.message
    assert "cri.max_slow_calls_per_pod" in refused.value.message
    assert refused.value.message.startswith("ExecSync:")
    # Another pod still gets its share, and teardown is a bucket of its own.
    shares.enter(R + "ExecSync", Admit(CallClass.WORK, POD_B))
    shares.enter(R + "StopContainer", Admit(CallClass.TEARDOWN, POD_A))
    assert shares.in_flight(CallClass.WORK, POD_A) == 3
    assert shares.in_flight(CallClass.WORK) == 4
    shares.leave(a)
    shares.enter(R + "ExecSync", a)  # a freed slot is the pod's again


def test_the_node_bound_holds_over_all_pods() -> None:
    shares = CallShares(CriConfig(max_slow_calls=4, max_slow_calls_per_pod=2))
    for pod in ("p1", "p1", "p2", "p2"):
        shares.enter(R + "ExecSync", Admit(CallClass.WORK, pod))
    with pytest.raises(ResourceExhausted) as refused:
        shares.enter(R + "ExecSync", Admit(CallClass.WORK, "p3"))
    assert "cri.max_slow_calls)" in refused.value.message
    shares.enter(R + "Version", POLL)  # polls are never counted or refused


def test_event_streams_have_a_node_bound() -> None:
    shares = CallShares(CriConfig(max_event_streams=1))
    stream = Admit(CallClass.STREAM)
    shares.enter(R + "GetContainerEvents", stream)
    with pytest.raises(ResourceExhausted, match=r"cri\.max_event_streams"):
        shares.enter(R + "GetContainerEvents", stream)
    shares.leave(stream)
    shares.enter(R + "GetContainerEvents", stream)


def test_config_refuses_a_share_over_the_node_bound() -> None:
    with pytest.raises(ConfigError, match=r"cri\.max_slow_calls_per_pod"):
        Config(cri=CriConfig(max_slow_calls=4, max_slow_calls_per_pod=5))
    assert CriConfig().slow_threads == 2 * 128 + 8


class _Method:
    def __init__(self, method: str) -> None:
        self.method = method


def _Details(method: str) -> grpc.HandlerCallDetails:
    return cast(grpc.HandlerCallDetails, _Method(method))


def test_the_interceptor_releases_a_share_when_the_call_ends_or_fails(
    records: Records,
) -> None:
    shares = CallShares(CriConfig(max_slow_calls=4, max_slow_calls_per_pod=1))
    interceptor = AdmissionInterceptor(shares, records)
    inside = threading.Event()
    release = threading.Event()

    def slow(request: Any, context: Any) -> str:
        inside.set()
        release.wait(10)
        return "done"

    def failing(request: Any, context: Any) -> str:
        raise RuntimeError("boom")

    handler = grpc.unary_unary_rpc_method_handler(slow)
    wrapped = interceptor.intercept_service(lambda d: handler, _Details(R + "ExecSync"))
    request = pb.ExecSyncRequest(container_id="c" * 64)
    worker = threading.Thread(target=wrapped.unary_unary, args=(request, None))
    worker.start()
    assert inside.wait(10)
    with pytest.raises(ResourceExhausted):
        wrapped.unary_unary(request, None)
    release.set()
    worker.join(10)
    assert shares.in_flight(CallClass.WORK, POD_A) == 0
    bad = interceptor.intercept_service(
        lambda d: grpc.unary_unary_rpc_method_handler(failing), _Details(R + "ExecSync")
    )
    with pytest.raises(RuntimeError):
        bad.unary_unary(request, None)
    assert shares.in_flight(CallClass.WORK) == 0


def test_a_stream_holds_its_slot_until_it_ends(records: Records) -> None:
    shares = CallShares(CriConfig(max_event_streams=1))
    interceptor = AdmissionInterceptor(shares, records)

    def events(request: Any, context: Any) -> Iterator[int]:
        yield 1
        yield 2

    handler = grpc.unary_stream_rpc_method_handler(events)
    wrapped = interceptor.intercept_service(lambda d: handler, _Details(R + "GetContainerEvents"))
    stream = wrapped.unary_stream(pb.GetEventsRequest(), None)
    assert next(stream) == 1
    assert shares.in_flight(CallClass.STREAM) == 1
    assert list(stream) == [2]
    assert shares.in_flight(CallClass.STREAM) == 0
