"""A timed-out ExecSync and a killed exec session take every process they started with them:
background children, and those that called setsid and were re-parented to the container's
init. The real agent on the host (hybrid cgroups: the exec's freezer sub-cgroup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agent.conftest import AgentProcess, EventSink, make_spec
from tests.support.wait import wait_for
from vmcri.agent import types
from vmcri.agent.guest.cgroups import CgroupReader

pytestmark = pytest.mark.integration

# A background child, a setsid'd grandchild whose parent is gone (re-parented to the
# container's init), and the foreground sleep the timeout interrupts.
SPAWNER = "sleep 1001 & (setsid sleep 1002 &); setsid sh -c 'sleep 1003 &'; sleep 1004"
# An init that reaps what is re-parented to it, so killed orphans do not linger as zombies.
REAPER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def _live_sleeps(client: object, cid: str) -> list[str]:
    ps = client.exec_sync(cid, ["ps", "-o", "stat,args"], timeout=10)  # type: ignore[attr-defined]
    assert ps.exit_code == 0, ps.stderr
    found = []
    for line in ps.stdout.decode().splitlines()[1:]:
        stat, _, args = line.strip().partition(" ")
        if args.strip().startswith("sleep 100") and not stat.startswith("Z"):
            found.append(args.strip())
    return found


def _exec_cgroups(cid: str) -> list[Path]:
    reader = CgroupReader()
    base = Path("/sys/fs/cgroup") if reader.unified else Path("/sys/fs/cgroup/freezer")
    return sorted((base / "vmcri" / cid).glob("vmcri-exec-*"))


def test_a_timed_out_exec_sync_is_killed_with_its_children(
    agent: AgentProcess, busybox_lower: Path
) -> None:
    client = agent.client(EventSink())
    cid = "exec-timeout"
    client.create_container(cid, make_spec(REAPER), lowerdirs=[str(busybox_lower)])
    client.start_container(cid)
    try:
        result = client.exec_sync(cid, ["sh", "-c", SPAWNER], timeout=1)
        assert result.timed_out
        assert _live_sleeps(client, cid) == []
        assert _exec_cgroups(cid) == []
        # An exec that ends on its own keeps what it left in the background (as containerd
        # does), back in the container's own cgroup. (It must let go of the output pipes:
        # runc exec copies them and ends only when every holder has closed them.)
        daemon = "sleep 1005 </dev/null >/dev/null 2>&1 & exit 3"
        done = client.exec_sync(cid, ["sh", "-c", daemon], timeout=10)
        assert (done.timed_out, done.exit_code) == (False, 3)
        assert _live_sleeps(client, cid) == ["sleep 1005"]
        assert _exec_cgroups(cid) == []
    finally:
        client.remove_container(cid)
        client.close()


def test_a_killed_exec_session_takes_its_children(agent: AgentProcess, busybox_lower: Path) -> None:
    sink = EventSink()
    client = agent.client(sink)
    cid = "exec-session-kill"
    client.create_container(cid, make_spec(REAPER), lowerdirs=[str(busybox_lower)])
    client.start_container(cid)
    try:
        exec_id = client.exec_start(cid, ["sh", "-c", f"{SPAWNER}; echo never"])
        wait_for(lambda: len(_live_sleeps(client, cid)) == 4, 15, "the exec's four sleeps")
        client.kill_exec(cid, exec_id)
        ended = sink.wait_for(
            lambda: next(
                (e for e in sink.events if isinstance(e, types.ExecExit) and e.exec_id == exec_id),
                None,
            )
        )
        assert ended.exit_code == 137
        assert _live_sleeps(client, cid) == []
        assert _exec_cgroups(cid) == []
    finally:
        client.remove_container(cid)
        client.close()
