"""Container life cycle as kubelet relies on it, the same on both handlers.

Both handlers hand containers to the same supervisor (the pod's vmcri agent, on the host
for runc, in the guest for vm), so these run once per handler: logs complete when an
exit is seen, the stop signal and the stop timeout, ReopenContainerLog, exit codes,
ExecSync.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conformance.conftest import Pod
from tests.support.wait import wait_for, wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def _log_path(pod: Pod, name: str) -> str:
    return str(pod.env.tmp / "logs" / pod.config.metadata.name / f"{name}.log")


def _log(pod: Pod, name: str) -> str:
    path = Path(_log_path(pod, name))
    return path.read_text() if path.exists() else ""


def _start(pod: Pod, container_id: str) -> None:
    pod.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)


def _state(pod: Pod, container_id: str) -> pb.ContainerStatus:
    request = pb.ContainerStatusRequest(container_id=container_id)
    status: pb.ContainerStatus = pod.runtime.ContainerStatus(request, timeout=30).status
    return status


def _wait_exited(pod: Pod, container_id: str, timeout: float = 120) -> pb.ContainerStatus:
    wait_for(lambda: _state(pod, container_id).state == pb.CONTAINER_EXITED, timeout, "the exit")
    return _state(pod, container_id)


def test_every_line_is_in_the_log_once_the_exit_is_seen(pod: Pod) -> None:
    name = "short-lived"
    cid = pod.create(
        name, ["sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; done"]
    )
    # kubelet may open the log before any output: the file exists once the container does.
    assert os.path.exists(_log_path(pod, name))
    _start(pod, cid)
    status = _wait_exited(pod, cid)
    assert (status.exit_code, status.reason) == (0, "Completed")
    lines = [line for line in _log(pod, name).splitlines() if " stdout F line " in line]
    assert len(lines) == 300 and lines[-1].endswith("line 300")


def test_exit_code_and_reason_of_a_failing_container(pod: Pod) -> None:
    cid = pod.create("fails", ["sh", "-c", "echo bad >&2; exit 3"])
    _start(pod, cid)
    status = _wait_exited(pod, cid)
    assert (status.exit_code, status.reason) == (3, "Error")
    assert " stderr F bad" in _log(pod, "fails")


def test_stop_sends_the_stop_signal_first(pod: Pod) -> None:
    script = "trap 'echo got-term; exit 4' TERM; echo ready; while true; do sleep 0.2; done"
    cid = pod.create("polite", ["sh", "-c", script])
    _start(pod, cid)
    wait_for(lambda: "ready" in _log(pod, "polite"), 60, "the container to start")
    started = time.monotonic()
    pod.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=30), timeout=90)
    assert time.monotonic() - started < 25  # it did not wait for the timeout
    status = _state(pod, cid)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 4)
    assert "got-term" in _log(pod, "polite")


def test_stop_kills_a_container_that_ignores_its_stop_signal_after_the_timeout(pod: Pod) -> None:
    script = "trap '' TERM; echo ready; while true; do sleep 0.2; done"
    cid = pod.create("stubborn", ["sh", "-c", script])
    _start(pod, cid)
    wait_for(lambda: "ready" in _log(pod, "stubborn"), 60, "the container to start")
    started = time.monotonic()
    pod.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=90)
    assert time.monotonic() - started >= 2.0
    status = _state(pod, cid)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 137)


def test_reopen_container_log_starts_a_new_file(pod: Pod) -> None:
    name = "rotated"
    script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    cid = pod.create(name, ["sh", "-c", script])
    _start(pod, cid)
    wait_for(lambda: "tick 2" in _log(pod, name), 60, "the first ticks")
    os.rename(_log_path(pod, name), _log_path(pod, name) + ".1")
    pod.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=60)
    assert os.path.exists(_log_path(pod, name))  # the call returns once the file is there
    assert wait_until(lambda: "tick" in _log(pod, name), 30)
    old = Path(_log_path(pod, name) + ".1").read_text()
    new_first = int(_log(pod, name).splitlines()[0].rsplit(" ", 1)[1])
    old_last = int(old.splitlines()[-1].rsplit(" ", 1)[1])
    assert new_first > old_last  # nothing written twice, the new file takes over
    pod.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)


def test_exec_sync_output_and_exit_code(pod: Pod) -> None:
    cid = pod.create("sleeper", ["sleep", "1000"])
    _start(pod, cid)
    result = pod.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 5"], timeout=60
        ),
        timeout=90,
    )
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 5)
    pod.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)


def test_exec_sync_answers_when_its_process_ends_not_its_background_children(pod: Pod) -> None:
    """``sh -c 'daemon &'`` is a common probe and start-up hook; the exec's answer is the
    shell's exit, as with containerd (crun in the foreground would wait for the daemon)."""
    cid = pod.create("starter", ["sleep", "1000"])
    _start(pod, cid)
    started = time.monotonic()
    result = pod.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=cid, cmd=["sh", "-c", "sleep 300 >/dev/null 2>&1 & exit 4"], timeout=120
        ),
        timeout=150,
    )
    assert result.exit_code == 4
    assert time.monotonic() - started < 60  # the background sleep is still running
    ps = pod.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["ps"], timeout=60), timeout=90
    )
    assert b"sleep 300" in ps.stdout  # left running, as containerd leaves it
    pod.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
