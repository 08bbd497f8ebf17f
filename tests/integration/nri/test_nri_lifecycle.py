"""NRI through the CRI against the real daemon, on both handlers: the events a plugin sees
and their order, its adjustment visible inside the container, a refusal that fails
RunPodSandbox/CreateContainer leaving nothing (and a retry that works), and the
Synchronize a plugin gets of pods that already run."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.integration.vm.conftest import VmEnv, domain_exists
from tests.support.nri_plugin import Behaviour
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.api import nri_pb2

from .conftest import PluginFactory, exec_in, remove_pod

pytestmark = pytest.mark.integration

HANDLERS = ["runc", "vm"]


def _adjuster(shared: Path) -> Behaviour:
    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        out.adjust.env.add(key="NRI_ENV", value=f"for-{req.container.name}")
        out.adjust.mounts.add(
            destination="/nri-mount", source=str(shared), type="bind", options=["rbind", "ro"]
        )
        out.adjust.rlimits.add(type="RLIMIT_NOFILE", soft=1234, hard=1234)
        out.adjust.annotations["nri.test/adjusted"] = "yes"
        out.adjust.linux.resources.memory.limit.value = 64 << 20
        return out

    def update(req: nri_pb2.UpdateContainerRequest) -> nri_pb2.UpdateContainerResponse:
        # Whatever kubelet asks, this plugin gives the container 96 MiB.
        out = nri_pb2.UpdateContainerResponse()
        out.update.add(container_id=req.container.id).linux.resources.memory.limit.value = 96 << 20
        return out

    return Behaviour(adjust=adjust, update=update)


MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
)


@pytest.mark.parametrize("handler", HANDLERS)
def test_events_in_order_and_the_adjustment_inside_the_container(
    nri_env: VmEnv, connect: PluginFactory, tmp_path: Path, handler: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")
    plugin = connect("adjust", "10", _adjuster(shared))
    sandbox_id, pod = nri_env.run_pod(f"nri-{handler}", handler=handler)
    container_id = nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"])
    nri_env.start(container_id)
    out = exec_in(nri_env, container_id, "echo $NRI_ENV; cat /nri-mount/file; ulimit -n")
    assert out.split("\n")[:3] == ["for-app", "from the host", "1234"]
    status = nri_env.status(container_id)
    assert status.annotations["nri.test/adjusted"] == "yes"
    assert exec_in(nri_env, container_id, MEMORY_LIMIT).strip() == str(64 << 20)
    update = pb.UpdateContainerResourcesRequest(
        container_id=container_id, linux=pb.LinuxContainerResources(memory_limit_in_bytes=80 << 20)
    )
    nri_env.runtime.UpdateContainerResources(update, timeout=120)
    assert exec_in(nri_env, container_id, MEMORY_LIMIT).strip() == str(96 << 20)
    nri_env.runtime.StopContainer(
        pb.StopContainerRequest(container_id=container_id, timeout=0), timeout=60
    )
    nri_env.runtime.RemoveContainer(
        pb.RemoveContainerRequest(container_id=container_id), timeout=60
    )
    remove_pod(nri_env, sandbox_id)
    assert [(s.event, s.container) for s in plugin.seen] == [
        ("RUN_POD_SANDBOX", ""),
        ("CREATE_CONTAINER", "app"),
        ("VALIDATE_CONTAINER_ADJUSTMENT", "app"),
        ("POST_CREATE_CONTAINER", "app"),
        ("START_CONTAINER", "app"),
        ("POST_START_CONTAINER", "app"),
        ("UPDATE_CONTAINER", "app"),
        ("POST_UPDATE_CONTAINER", "app"),
        ("STOP_CONTAINER", "app"),
        ("REMOVE_CONTAINER", "app"),
        ("STOP_POD_SANDBOX", ""),
        ("REMOVE_POD_SANDBOX", ""),
    ]
    assert {s.pod for s in plugin.seen} == {f"nri-{handler}"}


def _pods_named(env: VmEnv, name: str) -> list[pb.PodSandbox]:
    listed = env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
    return [p for p in listed.items if p.metadata.name == name]


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_refusal_fails_the_call_leaves_nothing_and_a_retry_succeeds(
    nri_env: VmEnv, connect: PluginFactory, handler: str
) -> None:
    behaviour = Behaviour(refuse={"RUN_POD_SANDBOX", "CREATE_CONTAINER"})
    connect("refuse", "10", behaviour)
    name = f"refused-{handler}"
    with pytest.raises(grpc.RpcError) as failed:
        nri_env.run_pod(name, handler=handler)
    assert "10-refuse" in str(failed.value.details())
    assert _pods_named(nri_env, name) == []
    if handler == "vm":
        state = nri_env.tmp / "state" / "backends" / "vm"
        assert not state.is_dir() or not [d for d in state.iterdir() if domain_exists(d.name)]

    behaviour.refuse.discard("RUN_POD_SANDBOX")
    sandbox_id, pod = nri_env.run_pod(name, handler=handler)
    with pytest.raises(grpc.RpcError) as failed:
        nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"])
    assert "10-refuse" in str(failed.value.details())
    listed = nri_env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
    assert [c for c in listed.containers if c.pod_sandbox_id == sandbox_id] == []

    behaviour.refuse.clear()
    container_id = nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"])
    nri_env.start(container_id)
    assert nri_env.status(container_id).state == pb.CONTAINER_RUNNING
    remove_pod(nri_env, sandbox_id)


def test_a_plugin_that_connects_later_is_synchronized_with_running_pods(
    nri_env: VmEnv, connect: PluginFactory
) -> None:
    running = {}
    for handler in HANDLERS:
        sandbox_id, pod = nri_env.run_pod(f"sync-{handler}", handler=handler)
        running[handler] = (sandbox_id, nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"]))
    plugin = connect("late", "50", Behaviour())
    pods = {p.name: p for p in plugin.synced_pods}
    assert {"sync-runc", "sync-vm"} <= set(pods)
    assert pods["sync-vm"].runtime_handler == "vm"
    synced = {c.id for c in plugin.synced_containers}
    assert {container_id for _, container_id in running.values()} <= synced
    for sandbox_id, _ in running.values():
        remove_pod(nri_env, sandbox_id)


def test_a_pre_installed_plugin_is_started_registered_and_sees_events(nri_env: VmEnv) -> None:
    """plugin_path/05-launched was installed before the daemon started (conftest)."""
    events = nri_env.tmp / "launched.events"
    wait_for(lambda: events.exists() and "REGISTERED" in events.read_text(), 30, "registration")
    assert "NRI plugin 05-launched: registered" in (nri_env.tmp / "daemon.log").read_text()
    sandbox_id, _ = nri_env.run_pod("seen-by-launched", handler="runc")
    remove_pod(nri_env, sandbox_id)
    lines = events.read_text().splitlines()
    assert "RUN_POD_SANDBOX seen-by-launched " in lines
    assert "REMOVE_POD_SANDBOX seen-by-launched " in lines


def _host_only(marker: Path, what: str) -> Behaviour:
    """A hook (a host binary) or a host device node: what a VM guest cannot hold."""

    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        if what == "hook":
            out.adjust.hooks.create_runtime.add(
                path="/bin/sh", args=["sh", "-c", f"echo hooked > {marker}"]
            )
        else:
            out.adjust.linux.devices.add(path="/dev/fuse", type="c", major=10, minor=229)
        return out

    return Behaviour(events=("CREATE_CONTAINER",), adjust=adjust)


@pytest.mark.parametrize("what", ["hook", "device"])
def test_hooks_and_devices_apply_on_runc_and_are_refused_in_a_vm(
    nri_env: VmEnv, connect: PluginFactory, tmp_path: Path, what: str
) -> None:
    marker = tmp_path / "hooked"
    connect("hostonly", "10", _host_only(marker, what))
    runc_pod, runc_config = nri_env.run_pod(f"{what}-runc", handler="runc")
    container_id = nri_env.create(runc_pod, runc_config, "app", ["sleep", "3600"])
    if what == "hook":
        assert marker.read_text() == "hooked\n"  # runc ran it, on the host
    else:
        nri_env.start(container_id)
        assert exec_in(nri_env, container_id, "test -c /dev/fuse && echo yes") == "yes\n"
    vm_pod, vm_config = nri_env.run_pod(f"{what}-vm", handler="vm")
    with pytest.raises(grpc.RpcError) as refused:
        nri_env.create(vm_pod, vm_config, "app", ["sleep", "3600"])
    expected = "OCI hook '/bin/sh'" if what == "hook" else "device '/dev/fuse'"
    assert expected in str(refused.value.details())
    listed = nri_env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
    assert [c for c in listed.containers if c.pod_sandbox_id == vm_pod] == []
    remove_pod(nri_env, runc_pod)
    remove_pod(nri_env, vm_pod)


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_plugins_eviction_stops_the_container_and_kubelet_sees_why(
    nri_env: VmEnv, connect: PluginFactory, handler: str
) -> None:
    """A plugin's UpdateContainers evict: the container is killed at once, its status says
    Evicted with the plugin and its reason; the pod and its other container run on."""
    plugin = connect("evict", "10", Behaviour(events=("STOP_CONTAINER",)))
    sandbox_id, pod = nri_env.run_pod(f"evict-{handler}", handler=handler)
    victim = nri_env.create(sandbox_id, pod, "victim", ["sleep", "3600"])
    bystander = nri_env.create(sandbox_id, pod, "bystander", ["sleep", "3600"])
    nri_env.start(victim)
    nri_env.start(bystander)
    ask = nri_pb2.UpdateContainersRequest()
    ask.evict.add(container_id=victim, reason="over its cache budget")
    assert plugin.update_containers(ask) is not None
    wait_for(lambda: nri_env.status(victim).reason == "Evicted", 120, "the eviction")
    status = nri_env.status(victim)
    assert status.state == pb.CONTAINER_EXITED
    assert status.exit_code == 137
    assert status.message == "evicted by NRI plugin 10-evict: over its cache budget"
    assert nri_env.status(bystander).state == pb.CONTAINER_RUNNING
    wait_for(lambda: plugin.events_named("STOP_CONTAINER"), 60, "StopContainer at the plugin")
    assert [s.container for s in plugin.events_named("STOP_CONTAINER")] == ["victim"]
    remove_pod(nri_env, sandbox_id)


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_validator_rejects_an_adjustment_and_nothing_is_left(
    nri_env: VmEnv, connect: PluginFactory, handler: str
) -> None:
    """A validating plugin refuses what another plugin's adjustment would make of a
    container: CreateContainer fails naming the validator and its reason, no container is
    left, and the same container without that adjustment is created."""
    placing = {"on": True}

    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        if placing["on"]:
            out.adjust.env.add(key="DEBUG_BACKDOOR", value="1")
        return out

    def validate(
        req: nri_pb2.ValidateContainerAdjustmentRequest,
    ) -> nri_pb2.ValidateContainerAdjustmentResponse:
        env = {e.key for e in req.adjust.env}
        owner = req.owners.owners[req.container.id].compound[nri_pb2.Field.Env].owners
        return nri_pb2.ValidateContainerAdjustmentResponse(
            reject="DEBUG_BACKDOOR" in env,
            reason=f"DEBUG_BACKDOOR set by {owner.get('DEBUG_BACKDOOR', '?')}",
        )

    connect("placer", "10", Behaviour(events=("CREATE_CONTAINER",), adjust=adjust))
    connect("policy", "90", Behaviour(events=("VALIDATE_CONTAINER_ADJUSTMENT",), validate=validate))
    sandbox_id, pod = nri_env.run_pod(f"validated-{handler}", handler=handler)
    with pytest.raises(grpc.RpcError) as failed:
        nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"])
    assert "validator 90-policy rejected" in str(failed.value.details())
    assert "DEBUG_BACKDOOR set by 10-placer" in str(failed.value.details())
    listed = nri_env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
    assert [c for c in listed.containers if c.pod_sandbox_id == sandbox_id] == []
    placing["on"] = False
    container_id = nri_env.create(sandbox_id, pod, "app", ["sleep", "3600"])
    nri_env.start(container_id)
    assert nri_env.status(container_id).state == pb.CONTAINER_RUNNING
    remove_pod(nri_env, sandbox_id)
