"""The guest's OCI runtime: crun by default, runc when the handler asks for it
(options.oci_runtime), each running the same containers through the same agent, and
each running an exec as the container's own process (user, groups, capabilities)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

GUEST_RUNC = """
[runtimes.vm]
backend = "vm"
[runtimes.vmrunc]
backend = "vm"
[runtimes.vmrunc.options]
oci_runtime = "runc"
template = "off"
"""
AS_USER = pb.LinuxContainerConfig(
    security_context=pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=1001),
        supplemental_groups=[1234],
        # PID 1 of its own namespace is the container's process, to compare an exec with.
        namespace_options=pb.NamespaceOption(pid=pb.NamespaceMode.CONTAINER),
    )
)
IDENTITY = "grep -E '^(Uid|Gid|Groups|Cap...|NoNewPrivs):' /proc/{pid}/status"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    config = NO_POD_NETWORK + GUEST_RUNC
    with vm_daemon(tmp_path_factory.mktemp("oci"), config, wait_template=False) as env:
        yield env


@pytest.mark.parametrize(("handler", "oci_runtime"), [("vm", "crun"), ("vmrunc", "runc")])
def test_the_guest_runs_containers_with_the_runtime_the_handler_names(
    env: VmEnv, handler: str, oci_runtime: str
) -> None:
    sandbox_id, pod = env.run_pod(f"oci-{oci_runtime}", handler)
    assert env.runtime_info(sandbox_id)["oci_runtime"] == oci_runtime

    first = env.create(sandbox_id, pod, "exits", ["sh", "-c", "echo out; exit 3"])
    env.start(first)
    wait_for(lambda: env.status(first).state == pb.CONTAINER_EXITED, 60, "the container's exit")
    assert env.status(first).exit_code == 3
    assert "stdout F out" in env.log_of(f"oci-{oci_runtime}", "exits")

    second = env.create(sandbox_id, pod, "runs", ["sleep", "1000"])
    env.start(second)
    result = _exec(env, second, "echo e; exit 4")
    assert (result.exit_code, result.stdout) == (4, b"e\n")
    env.runtime.StopContainer(pb.StopContainerRequest(container_id=second, timeout=1), timeout=60)
    assert env.status(second).exit_code == 143  # the stop signal, through the runtime

    third = env.create(sandbox_id, pod, "user", ["sleep", "1000"], linux=AS_USER)
    env.start(third)
    execd = _exec(env, third, IDENTITY.format(pid="$$")).stdout.decode()
    main = _exec(env, third, IDENTITY.format(pid="1")).stdout.decode()
    fields = dict(line.split(":", 1) for line in execd.splitlines())
    assert fields["Uid"].split()[0] == "1001" and "1234" in fields["Groups"].split()
    assert execd == main  # the container's own process, whichever runtime started the exec
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)


def _exec(env: VmEnv, container_id: str, script: str) -> pb.ExecSyncResponse:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    response: pb.ExecSyncResponse = env.runtime.ExecSync(request, timeout=120)
    return response
