"""ExecSync past its timeout: the call reports the timeout and the exec'd process is gone,
with everything it started (the agent runs each exec in a sub-cgroup of its own)."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.conformance.conftest import Pod

pytestmark = pytest.mark.integration

# Background children, one of them setsid'd and re-parented to the container's init.
SPAWNER = "sleep 1001 & (setsid sleep 1002 &); sleep 1003"
# An init that reaps what is re-parented to it, so killed orphans do not linger as zombies.
REAPER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def _live_sleeps(pod: Pod, container_id: str) -> list[str]:
    ps = pod.exec(container_id, ["ps", "-o", "stat,args"])
    assert ps.exit_code == 0, ps.stderr
    found = []
    for line in ps.stdout.decode().splitlines()[1:]:
        stat, _, args = line.strip().partition(" ")
        if args.strip().startswith("sleep 100") and not stat.startswith("Z"):
            found.append(args.strip())
    return found


@pytest.mark.parametrize("pod", ["runc", "vm"], indirect=True)
def test_exec_sync_past_its_timeout_kills_the_process_and_its_children(pod: Pod) -> None:
    container_id = pod.run("exec-timeout", REAPER)
    with pytest.raises(grpc.RpcError) as timed_out:
        pod.exec(container_id, ["sh", "-c", SPAWNER], timeout=1)
    assert timed_out.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, timed_out.value
    assert _live_sleeps(pod, container_id) == []
    pod.remove(container_id)
