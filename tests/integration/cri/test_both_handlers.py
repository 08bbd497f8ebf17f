"""Container behaviour that is the same on both handlers, through the CRI socket.

Both handlers hand containers to the same supervisor (the pod's vmcri agent, on the host
for runc, in the guest for vm), so one suite, parametrised over the handlers, checks what
kubelet relies on: logs complete when an exit is seen, the stop signal and the stop
timeout, ReopenContainerLog, exit codes, ExecSync. One pod per handler (a VM boots under
emulation here), shared by the module's tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import daemon_with_busybox
from tests.integration.vm.conftest import BOOT_TIMEOUT_S, VmEnv, destroy_domain
from tests.support.wait import wait_for, wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

HANDLERS = ("runc", "vm")


@dataclass
class Pod:
    env: VmEnv
    handler: str
    sandbox_id: str
    config: pb.PodSandboxConfig
    name: str

    def container(self, name: str, command: list[str]) -> str:
        return self.env.create(self.sandbox_id, self.config, name, command)

    def log(self, name: str) -> str:
        return self.env.log_of(self.name, name)

    def log_path(self, name: str) -> str:
        return str(self.env.tmp / "logs" / self.name / f"{name}.log")

    def state(self, container_id: str) -> pb.ContainerStatus:
        return self.env.status(container_id)

    def wait_exited(self, container_id: str, timeout: float = 120) -> pb.ContainerStatus:
        wait_for(lambda: self.state(container_id).state == pb.CONTAINER_EXITED, timeout, "the exit")
        return self.state(container_id)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with daemon_with_busybox(tmp_path_factory.mktemp("both"), VmEnv) as env:
        try:
            yield env
        finally:
            for sandbox_id in env.sandboxes:
                destroy_domain(sandbox_id)


@pytest.fixture(scope="module", params=HANDLERS)
def pod(request: pytest.FixtureRequest, env: VmEnv) -> Pod:
    handler: str = request.param
    name = f"both-{handler}"
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname=name,
        log_directory=str(env.tmp / "logs" / name),
    )
    run = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
    sandbox_id = env.runtime.RunPodSandbox(run, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    return Pod(env, handler, sandbox_id, config, name)


def test_every_line_is_in_the_log_once_the_exit_is_seen(pod: Pod) -> None:
    name = "short-lived"
    cid = pod.container(
        name, ["sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; done"]
    )
    # kubelet may open the log before any output: the file exists once the container does.
    assert os.path.exists(pod.log_path(name))
    pod.env.start(cid)
    status = pod.wait_exited(cid)
    assert (status.exit_code, status.reason) == (0, "Completed")
    lines = [line for line in pod.log(name).splitlines() if " stdout F line " in line]
    assert len(lines) == 300 and lines[-1].endswith("line 300")


def test_exit_code_and_reason_of_a_failing_container(pod: Pod) -> None:
    cid = pod.container("fails", ["sh", "-c", "echo bad >&2; exit 3"])
    pod.env.start(cid)
    status = pod.wait_exited(cid)
    assert (status.exit_code, status.reason) == (3, "Error")
    assert " stderr F bad" in pod.log("fails")


def test_stop_sends_the_stop_signal_first(pod: Pod) -> None:
    script = "trap 'echo got-term; exit 4' TERM; echo ready; while true; do sleep 0.2; done"
    cid = pod.container("polite", ["sh", "-c", script])
    pod.env.start(cid)
    wait_for(lambda: "ready" in pod.log("polite"), 60, "the container to start")
    started = time.monotonic()
    pod.env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=30), timeout=90)
    assert time.monotonic() - started < 25  # it did not wait for the timeout
    status = pod.state(cid)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 4)
    assert "got-term" in pod.log("polite")


def test_stop_kills_a_container_that_ignores_its_stop_signal_after_the_timeout(pod: Pod) -> None:
    script = "trap '' TERM; echo ready; while true; do sleep 0.2; done"
    cid = pod.container("stubborn", ["sh", "-c", script])
    pod.env.start(cid)
    wait_for(lambda: "ready" in pod.log("stubborn"), 60, "the container to start")
    started = time.monotonic()
    pod.env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=90)
    assert time.monotonic() - started >= 2.0
    status = pod.state(cid)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 137)


def test_reopen_container_log_starts_a_new_file(pod: Pod) -> None:
    name = "rotated"
    script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    cid = pod.container(name, ["sh", "-c", script])
    pod.env.start(cid)
    wait_for(lambda: "tick 2" in pod.log(name), 60, "the first ticks")
    os.rename(pod.log_path(name), pod.log_path(name) + ".1")
    pod.env.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=60)
    assert os.path.exists(pod.log_path(name))  # the call returns once the file is there
    assert wait_until(lambda: "tick" in pod.log(name), 30)
    old = Path(pod.log_path(name) + ".1").read_text()
    new_first = int(pod.log(name).splitlines()[0].rsplit(" ", 1)[1])
    old_last = int(old.splitlines()[-1].rsplit(" ", 1)[1])
    assert new_first > old_last  # nothing written twice, the new file takes over
    pod.env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)


def test_exec_sync_output_and_exit_code(pod: Pod) -> None:
    cid = pod.container("sleeper", ["sleep", "1000"])
    pod.env.start(cid)
    result = pod.env.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 5"], timeout=60
        ),
        timeout=90,
    )
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 5)
    pod.env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
