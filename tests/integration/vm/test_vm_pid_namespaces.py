"""A pod's PID namespaces as its containers see them, on both handlers.

Shared (NamespaceMode POD, kubelet's shareProcessNamespace): PID 1 is the pod's infra
process, and every container's processes are there; per container (CONTAINER, the default):
PID 1 is the container's own process; TARGET (ephemeral containers): the target's namespace.
Never the node's, nor, in a VM pod, the guest's: no vmcri agent, no kernel thread.
The shared namespace is also tried with runc as the guest's OCI runtime, in a cold-booted VM
(handler ``vmrunc``: no template).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.pid_namespaces import (
    PAUSE,
    assert_no_agent_nor_kernel_threads,
    container_linux,
    pid_pod,
    processes,
    run,
)
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

HANDLERS = ("vm", "runc")
GUEST_RUNC = """
[runtimes.vm]
backend = "vm"
[runtimes.runc]
backend = "runc"
[runtimes.vmrunc]
backend = "vm"
[runtimes.vmrunc.options]
oci_runtime = "runc"
template = "off"
"""


@pytest.fixture(scope="module")
def vm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("pidns"), NO_POD_NETWORK + GUEST_RUNC) as env:
        yield env


@pytest.mark.parametrize("handler", (*HANDLERS, "vmrunc"))
def test_a_shared_pid_pod_sees_its_infra_as_pid_1_and_every_container(
    vm_env: VmEnv, handler: str
) -> None:
    sandbox_id, pod = pid_pod(vm_env, f"shared-{handler}", handler, pb.POD)
    first = vm_env.create(
        sandbox_id, pod, "first", ["sleep", "3601"], linux=container_linux(pb.POD)
    )
    vm_env.start(first)
    second = vm_env.create(
        sandbox_id, pod, "second", ["sleep", "3602"], linux=container_linux(pb.POD)
    )
    vm_env.start(second)

    for container_id in (first, second):
        seen = processes(vm_env, container_id)
        assert seen[1].comm == PAUSE, seen
        cmdlines = {p.cmdline for p in seen.values()}
        assert {"sleep 3601", "sleep 3602"} <= cmdlines, seen
        assert_no_agent_nor_kernel_threads(seen)


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_container_pid_pod_gives_each_container_its_own_and_target_joins_one(
    vm_env: VmEnv, handler: str
) -> None:
    sandbox_id, pod = pid_pod(vm_env, f"own-{handler}", handler, pb.CONTAINER)
    first = vm_env.create(
        sandbox_id, pod, "first", ["sleep", "3603"], linux=container_linux(pb.CONTAINER)
    )
    vm_env.start(first)
    second = vm_env.create(
        sandbox_id, pod, "second", ["sleep", "3604"], linux=container_linux(pb.CONTAINER)
    )
    vm_env.start(second)
    # An ephemeral container (kubectl debug --target=first) joins first's namespace.
    debug = vm_env.create(
        sandbox_id, pod, "debug", ["sleep", "3605"], linux=container_linux(pb.TARGET, first)
    )
    vm_env.start(debug)

    for container_id, own in ((first, "sleep 3603"), (second, "sleep 3604")):
        seen = processes(vm_env, container_id)
        assert seen[1].cmdline == own, seen
        others = {"sleep 3603", "sleep 3604", "sleep 3605"} - {own}
        if container_id == first:
            others.discard("sleep 3605")  # the debug container is in first's namespace
        assert not others & {p.cmdline for p in seen.values()}, seen
        assert all(p.comm != PAUSE for p in seen.values()), seen
        assert_no_agent_nor_kernel_threads(seen)

    seen = processes(vm_env, debug)
    assert seen[1].cmdline == "sleep 3603", seen
    cmdlines = {p.cmdline for p in seen.values()}
    assert "sleep 3605" in cmdlines and "sleep 3604" not in cmdlines, seen
    assert_no_agent_nor_kernel_threads(seen)

    # A target that does not run (created, never started) has no namespace to join.
    idle = vm_env.create(
        sandbox_id, pod, "idle", ["sleep", "3606"], linux=container_linux(pb.CONTAINER)
    )
    with pytest.raises(grpc.RpcError) as raised:
        vm_env.create(
            sandbox_id, pod, "lost", ["sleep", "1"], linux=container_linux(pb.TARGET, idle)
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    assert "target_id" in (raised.value.details() or "")


@pytest.mark.parametrize("handler", HANDLERS)
def test_the_shared_namespace_and_its_infra_outlive_a_daemon_restart(
    vm_env: VmEnv, handler: str
) -> None:
    sandbox_id, pod = pid_pod(vm_env, f"restart-{handler}", handler, pb.POD)
    before = vm_env.create(
        sandbox_id, pod, "before", ["sleep", "3607"], linux=container_linux(pb.POD)
    )
    vm_env.start(before)
    assert processes(vm_env, before)[1].comm == PAUSE
    started = _infra_start_time(vm_env, before)

    vm_env.restart(kill=True)
    assert vm_env.pod_state(sandbox_id) == pb.SANDBOX_READY
    after = vm_env.create(
        sandbox_id, pod, "after", ["sleep", "3608"], linux=container_linux(pb.POD)
    )
    vm_env.start(after)
    seen = processes(vm_env, after)
    assert seen[1].comm == PAUSE, seen
    assert _infra_start_time(vm_env, after) == started  # the same infra, the same namespace
    assert {"sleep 3607", "sleep 3608"} <= {p.cmdline for p in seen.values()}, seen
    assert_no_agent_nor_kernel_threads(seen)


def _infra_start_time(env: VmEnv, container_id: str) -> bytes:
    """PID 1's start time (clock ticks since boot, /proc/PID/stat field 22): which one it is."""
    result = run(env, container_id, "cut -d' ' -f22 /proc/1/stat")
    assert result.exit_code == 0 and result.stdout.strip(), result
    return result.stdout
