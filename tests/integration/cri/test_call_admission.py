"""Slow CRI calls cannot freeze the runtime: 200 long ExecSyncs across four pods are in
flight while kubelet's polls still answer at once, a fifth pod's ExecSync still runs,
the over-share call of a full pod is refused at once, and the full pod still stops."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cri.conftest import CriEnv
from tests.integration.harness import NO_POD_NETWORK, daemon_with_busybox
from tests.support.held_calls import fill_share, probe_refused
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

SHARE = 50
FULL_PODS = 4  # 4 x 50 = 200 slow calls in flight
SLEEP = ["sleep", "987"]  # a number no other test's process has, to count ours
POLL_BOUND_S = 2.0
CONFIG = f"{NO_POD_NETWORK}[cri]\nmax_slow_calls = 256\nmax_slow_calls_per_pod = {SHARE}\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, mounts)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    tmp = tmp_path_factory.mktemp("admission")
    with daemon_with_busybox(tmp, lambda t, _r, i, d: CriEnv(t, i, d), CONFIG) as cri_env:
        yield cri_env


def _pod_with_sleeper(env: CriEnv, name: str) -> tuple[str, str]:
    sandbox_id = env.run_pod(name)
    container_id = env.create(sandbox_id, "main")
    env.start(container_id)
    return sandbox_id, container_id


def _sleeps_running() -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline == b"\0".join(w.encode() for w in SLEEP) + b"\0":
                count += 1
    return count


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


@pytest.mark.integration
def test_polls_answer_and_other_pods_run_while_slow_calls_fill_their_shares(env: CriEnv) -> None:
    runtime = env.runtime
    pods = [_pod_with_sleeper(env, f"full{i}") for i in range(FULL_PODS)]
    other_sandbox, other_container = _pod_with_sleeper(env, "other")
    in_flight: list[Any] = []  # grpc futures
    try:
        for _, container_id in pods:
            request = pb.ExecSyncRequest(container_id=container_id, cmd=SLEEP, timeout=3600)
            held, _ = fill_share(runtime, request, SHARE, 120)
            in_flight += held
        wait_for(lambda: _sleeps_running() == FULL_PODS * SHARE, 120, "200 execs running")
        assert not any(f.done() for f in in_flight)

        # kubelet's every-second calls answer at once.
        for name, call in (
            ("Version", lambda: runtime.Version(pb.VersionRequest(), timeout=30)),
            (
                "ListPodSandbox",
                lambda: runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30),
            ),
            (
                "ListContainers",
                lambda: runtime.ListContainers(pb.ListContainersRequest(), timeout=30),
            ),
            ("Status", lambda: runtime.Status(pb.StatusRequest(), timeout=30)),
        ):
            took, answer = _timed(call)
            print(f"{name} with {len(in_flight)} slow calls in flight: {took:.3f} s")
            assert took < POLL_BOUND_S, f"{name} took {took:.1f} s"
            if name == "ListPodSandbox":
                assert len(answer.items) == FULL_PODS + 1

        # Another pod's ExecSync still runs.
        request = pb.ExecSyncRequest(container_id=other_container, cmd=["echo", "fair"], timeout=60)
        took, answer = _timed(lambda: runtime.ExecSync(request, timeout=60))
        print(f"ExecSync of another pod: {took:.3f} s")
        assert answer.exit_code == 0 and answer.stdout == b"fair\n"

        # The full pod's next call is refused at once, naming the pod and the key.
        full_sandbox, full_container = pods[0]
        took, refused = _timed(lambda: probe_refused(runtime, full_container))
        print(f"over-share ExecSync refused in {took:.3f} s")
        assert refused is not None and took < POLL_BOUND_S
        assert full_sandbox in refused.details()
        assert f"{SHARE} work calls in flight (cri.max_slow_calls_per_pod)" in refused.details()

        # Its stop is not refused by its own hung execs: stopping ends them.
        took, _ = _timed(
            lambda: runtime.StopPodSandbox(
                pb.StopPodSandboxRequest(pod_sandbox_id=full_sandbox), timeout=120
            )
        )
        print(f"StopPodSandbox of the full pod: {took:.3f} s")
        # Each is answered (an exit status or an error), none left hanging.
        wait_for(lambda: all(f.done() for f in in_flight[:SHARE]), 60, "the full pod's execs")
    finally:
        for sandbox_id in [p for p, _ in pods] + [other_sandbox]:
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        wait_for(lambda: all(f.done() for f in in_flight), 60, "every exec answered")
        wait_for(lambda: _sleeps_running() == 0, 60, "no exec left running")
