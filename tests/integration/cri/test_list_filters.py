"""ListPodSandbox and ListContainers filters (id prefix, state, labels) through the daemon."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.integration.cri.conftest import CriEnv
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(env: CriEnv) -> dict[str, str]:
    """Two ready pods (one with two containers, one running) and one stopped pod."""
    a = env.run_pod("filter-a", {"app": "web", "tier": "front"})
    b = env.run_pod("filter-b", {"app": "web", "tier": "back"})
    c = env.run_pod("filter-c", {"app": "db"})
    running = env.create(a, "running", labels={"role": "server"})
    env.start(running)
    created = env.create(a, "created", labels={"role": "sidecar"})
    in_b = env.create(b, "in-b", labels={"role": "server"})
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=c), timeout=60)
    return {"a": a, "b": b, "c": c, "running": running, "created": created, "in_b": in_b}


def _pods(env: CriEnv, **fields: object) -> set[str]:
    request = pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(**fields))  # type: ignore[arg-type]
    return {p.id for p in env.runtime.ListPodSandbox(request, timeout=30).items}


def _containers(env: CriEnv, **fields: object) -> set[str]:
    request = pb.ListContainersRequest(filter=pb.ContainerFilter(**fields))  # type: ignore[arg-type]
    return {c.id for c in env.runtime.ListContainers(request, timeout=30).containers}


def test_pod_filters(env: CriEnv, world: dict[str, str]) -> None:
    ours = {world["a"], world["b"], world["c"]}
    assert _pods(env, id=world["a"][:12]) == {world["a"]}
    assert _pods(env, id=world["a"]) == {world["a"]}
    assert _pods(env, label_selector={"app": "web"}) & ours == {world["a"], world["b"]}
    assert _pods(env, label_selector={"app": "web", "tier": "back"}) == {world["b"]}
    assert _pods(env, label_selector={"app": "nope"}) == set()
    notready = pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)
    ready = pb.PodSandboxStateValue(state=pb.SANDBOX_READY)
    assert _pods(env, state=notready) & ours == {world["c"]}
    assert _pods(env, state=ready) & ours == {world["a"], world["b"]}
    assert _pods(env, state=ready, label_selector={"app": "db"}) == set()


def test_container_filters(env: CriEnv, world: dict[str, str]) -> None:
    running, created, in_b = world["running"], world["created"], world["in_b"]
    assert _containers(env, id=running[:12]) == {running}
    assert _containers(env, pod_sandbox_id=world["a"]) == {running, created}
    assert _containers(env, pod_sandbox_id=world["a"][:12]) == {running, created}
    run_state = pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)
    created_state = pb.ContainerStateValue(state=pb.CONTAINER_CREATED)
    assert _containers(env, state=run_state) >= {running}
    assert running not in _containers(env, state=created_state)
    assert _containers(env, state=created_state) >= {created, in_b}
    assert _containers(env, label_selector={"role": "server"}) >= {running, in_b}
    assert created not in _containers(env, label_selector={"role": "server"})
    assert _containers(env, pod_sandbox_id=world["b"], label_selector={"role": "server"}) == {in_b}
    assert _containers(env, pod_sandbox_id=world["a"], state=created_state) == {created}


def test_stream_forms_match_the_list_forms(env: CriEnv, world: dict[str, str]) -> None:
    flt = pb.PodSandboxFilter(label_selector={"app": "web"})
    streamed = {
        p.id
        for chunk in env.runtime.StreamPodSandboxes(
            pb.StreamPodSandboxesRequest(filter=flt), timeout=30
        )
        for p in chunk.pod_sandboxes
    }
    assert streamed == _pods(env, label_selector={"app": "web"})
    cflt = pb.ContainerFilter(pod_sandbox_id=world["a"])
    streamed_c = {
        c.id
        for chunk in env.runtime.StreamContainers(
            pb.StreamContainersRequest(filter=cflt), timeout=30
        )
        for c in chunk.containers
    }
    assert streamed_c == {world["running"], world["created"]}


def test_update_pod_sandbox_resources_through_the_daemon(
    env: CriEnv, world: dict[str, str]
) -> None:
    request = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=world["b"],
        resources=pb.LinuxContainerResources(cpu_quota=20000, cpu_period=100000),
    )
    env.runtime.UpdatePodSandboxResources(request, timeout=30)
    verbose = env.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=world["b"], verbose=True), timeout=30
    )
    recorded = json.loads(verbose.info["info"])["config"]["resources"]
    assert (recorded["cpu_quota"], recorded["cpu_period"]) == (20000, 100000)
    with pytest.raises(grpc.RpcError) as bad:
        env.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(
                pod_sandbox_id=world["b"], resources=pb.LinuxContainerResources(cpu_period=-5)
            ),
            timeout=30,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resources.cpu_period" in (bad.value.details() or "")
    with pytest.raises(grpc.RpcError) as missing:
        env.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="0" * 64), timeout=30
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
