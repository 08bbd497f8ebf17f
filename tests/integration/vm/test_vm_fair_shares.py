"""The per-pod shares hold for a VM pod as for a runc pod: a VM pod whose slow CRI calls
and streaming sessions fill its shares is refused its next one, naming the limit, while
kubelet's polls answer and a runc pod's ExecSync and exec session still run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.streaming.clients import SpdyClient, spdy_exec
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.held_calls import fill_share
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

CALLS = 4
SESSIONS = 2
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
CONFIG = (
    f"{NO_POD_NETWORK}[cri]\nmax_slow_calls_per_pod = {CALLS}\n"
    f"[streaming]\nmax_sessions_per_pod = {SESSIONS}\n"
)
FORWARD = ("portforward.k8s.io",)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("vmfair"), CONFIG) as vm_env:
        yield vm_env


@pytest.mark.integration
def test_a_vm_pod_over_its_shares_is_refused_and_a_runc_pod_is_not(env: VmEnv) -> None:
    runtime = env.runtime
    vm, vm_pod = env.run_pod("fairvm")
    vm_container = env.create(vm, vm_pod, "main", SLEEPER)
    env.start(vm_container)
    runc, runc_pod = env.run_pod("fairrunc", handler="runc")
    runc_container = env.create(runc, runc_pod, "main", SLEEPER)
    env.start(runc_container)
    request = pb.ExecSyncRequest(container_id=vm_container, cmd=["sleep", "600"], timeout=600)
    in_flight: list[Any] = []
    held: list[SpdyClient] = []
    try:
        in_flight, refused = fill_share(runtime, request, CALLS, 120)
        assert refused is not None
        assert vm in str(refused.details()) and "cri.max_slow_calls_per_pod" in str(
            refused.details()
        )
        assert not any(f.done() for f in in_flight)
        started = time.monotonic()
        runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
        runtime.Version(pb.VersionRequest(), timeout=30)
        assert time.monotonic() - started < 2.0
        answer = runtime.ExecSync(
            pb.ExecSyncRequest(container_id=runc_container, cmd=["echo", "ok"], timeout=60),
            timeout=60,
        )
        assert answer.stdout == b"ok\n"

        for _ in range(SESSIONS):
            url = runtime.PortForward(
                pb.PortForwardRequest(pod_sandbox_id=vm, port=[8080]), timeout=30
            ).url
            held.append(SpdyClient(url, protocols=FORWARD))
        assert [c.answer.status for c in held] == [101] * SESSIONS
        url = runtime.PortForward(
            pb.PortForwardRequest(pod_sandbox_id=vm, port=[8080]), timeout=30
        ).url
        over = SpdyClient(url, protocols=FORWARD)
        assert over.answer.status == 503
        assert f"limit {SESSIONS} per pod" in over.answer.body.decode()
        over.close()
        exec_url = runtime.Exec(
            pb.ExecRequest(container_id=runc_container, cmd=["echo", "served"], stdout=True),
            timeout=30,
        ).url
        assert spdy_exec(exec_url).stdout == b"served\n"
    finally:
        for client in held:
            client.close()
        runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=vm), timeout=120)
        wait_for(lambda: all(f.done() for f in in_flight), 120, "the VM pod's execs answered")
