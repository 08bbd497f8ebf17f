"""The guest agent driven through AgentClient, running real runc containers on the host."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.agent.conftest import AgentProcess, EventSink, make_spec
from tests.support.wait import wait_for
from vmcri.agent import types
from vmcri.agent.guest.cgroups import CgroupReader
from vmcri.agent.guest.mounts import is_mount_point
from vmcri.errors import AlreadyExists, InvalidArgument, NotFound

pytestmark = pytest.mark.integration


def _assert_gone(agent: AgentProcess, cid: str) -> None:
    bundle = agent.state / "containers" / cid
    assert not is_mount_point(str(bundle / "rootfs"))
    assert not bundle.exists()
    assert not (agent.scratch / cid).exists()
    assert cid not in [c["id"] for c in agent.runc_list()]
    reader = CgroupReader()
    cgroup = Path("/sys/fs/cgroup") if reader.unified else Path("/sys/fs/cgroup/memory")
    assert not (cgroup / "vmcri" / cid).exists()


def _runc_status(agent: AgentProcess, cid: str) -> str:
    return next((str(c["status"]) for c in agent.runc_list() if c["id"] == cid), "")


def test_container_lifecycle(agent: AgentProcess, busybox_lower: Path) -> None:
    sink = EventSink()
    client = agent.client(sink)
    cid = "life"
    script = "trap 'echo bye; exit 7' TERM; echo hello-out; echo hello-err >&2; " \
             "while :; do sleep 0.1; done"  # fmt: skip
    state = client.create_container(
        cid, make_spec(["sh", "-c", script]), lowerdirs=[str(busybox_lower)]
    )
    assert state.status is types.ContainerStatus.CREATED and state.pid > 0
    with pytest.raises(AlreadyExists):
        client.create_container(cid, make_spec(["true"]), lowerdirs=[str(busybox_lower)])
    assert client.start_container(cid).status is types.ContainerStatus.RUNNING

    sink.wait_for(lambda: b"hello-out\n" in sink.output(cid))
    sink.wait_for(lambda: b"hello-err\n" in sink.output(cid, "stderr"))

    result = client.exec_sync(cid, ["sh", "-c", "cat /etc/hostname; echo oops >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"agent-test\n", b"oops\n")
    started = time.monotonic()
    slow = client.exec_sync(cid, ["sleep", "30"], timeout=0.5)
    assert slow.timed_out and time.monotonic() - started < 10
    big = client.exec_sync(cid, ["sh", "-c", "yes | head -c 100000"], max_output_bytes=1000)
    assert big.truncated and len(big.stdout) == 1000

    stats = client.stats([cid])
    assert [s.container_id for s in stats.containers] == [cid]
    assert stats.vm_memory.total_bytes > 0
    if CgroupReader().unified or Path("/sys/fs/cgroup/memory").is_dir():
        assert stats.containers[0].memory_usage_bytes > 0
        assert stats.containers[0].pids >= 1
        assert stats.containers[0].cpu_usage_ns > 0

    client.update_resources(cid, b'{"pids": {"limit": 100}}')
    with pytest.raises(InvalidArgument):
        client.update_resources(cid, b"[1]")

    client.signal_container(cid, signal.SIGTERM)
    final = client.wait_container(cid, timeout=15)
    assert final.status is types.ContainerStatus.EXITED
    assert final.exit_code == 7 and not final.oom_killed
    exit_event = sink.wait_for(lambda: sink.exit_of(cid))
    assert exit_event.exit_code == 7
    assert b"bye\n" in sink.output(cid)

    client.remove_container(cid)
    client.remove_container(cid)  # idempotent
    with pytest.raises(NotFound):
        client.container_status(cid)
    _assert_gone(agent, cid)
    client.close()


def test_interactive_exec_pipes_and_tty(agent: AgentProcess, busybox_lower: Path) -> None:
    sink = EventSink()
    client = agent.client(sink)
    cid = "execs"
    client.create_container(cid, make_spec(["sleep", "600"]), lowerdirs=[str(busybox_lower)])
    client.start_container(cid)

    exec_id = client.exec_start(cid, ["cat"], stdin=True)
    client.write_stdin(cid, b"ping\n", exec_id=exec_id, close=True)

    def exec_exit(eid: str) -> types.ExecExit | None:
        return next(
            (e for e in sink.events if isinstance(e, types.ExecExit) and e.exec_id == eid), None
        )

    assert sink.wait_for(lambda: exec_exit(exec_id)).exit_code == 0
    assert sink.output(cid, exec_id=exec_id) == b"ping\n"

    tty_id = client.exec_start(cid, ["sh", "-c", "read x; stty size; exit 4"], tty=True,
                               stdin=True, rows=30, cols=100)  # fmt: skip
    client.resize(cid, 31, 101, exec_id=tty_id)
    client.write_stdin(cid, b"go\n", exec_id=tty_id)
    assert sink.wait_for(lambda: exec_exit(tty_id)).exit_code == 4
    assert b"31 101" in sink.output(cid, exec_id=tty_id)

    client.remove_container(cid)  # kills a running container
    _assert_gone(agent, cid)
    client.close()


def test_oom_killed(agent: AgentProcess, busybox_lower: Path) -> None:
    sink = EventSink()
    client = agent.client(sink)
    cid = "oom"
    spec = make_spec(["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
                     memory_limit=32 << 20)  # fmt: skip
    client.create_container(cid, spec, lowerdirs=[str(busybox_lower)])
    client.start_container(cid)
    final = client.wait_container(cid, timeout=30)
    assert final.exit_code == 137
    assert final.oom_killed
    assert sink.wait_for(lambda: sink.exit_of(cid)).oom_killed
    client.remove_container(cid)
    _assert_gone(agent, cid)
    client.close()


def test_reconnect_replays_what_happened_while_away(
    agent: AgentProcess, busybox_lower: Path
) -> None:
    first = agent.client(EventSink())
    cid = "away"
    first.create_container(
        cid,
        make_spec(["sh", "-c", "sleep 1; echo while-away; exit 5"]),
        lowerdirs=[str(busybox_lower)],
    )
    first.start_container(cid)
    first.close()  # the daemon goes away while the container runs
    wait_for(lambda: _runc_status(agent, cid) == "stopped", 30, f"{cid} to exit while away")

    sink = EventSink()
    second = agent.client(sink)
    exit_event = sink.wait_for(lambda: sink.exit_of(cid))
    assert exit_event.exit_code == 5
    assert b"while-away\n" in sink.output(cid)
    assert second.container_status(cid).exit_code == 5
    second.remove_container(cid)
    _assert_gone(agent, cid)
    second.close()


def test_bad_requests_leave_nothing_behind(agent: AgentProcess, busybox_lower: Path) -> None:
    client = agent.client()
    with pytest.raises(InvalidArgument, match="container_id"):
        client.create_container("../x", make_spec(["true"]), lowerdirs=[str(busybox_lower)])
    with pytest.raises(InvalidArgument, match="oci_spec"):
        client.create_container("badspec", b"{not json", lowerdirs=[str(busybox_lower)])
    with pytest.raises(InvalidArgument, match="lowerdirs"):
        client.create_container("badlower", make_spec(["true"]), lowerdirs=["/a:b"])
    with pytest.raises(InvalidArgument, match="hostname"):
        client.setup_sandbox(hostname="bad host")
    # runc itself refuses: everything made for the container is undone.
    with pytest.raises(Exception, match="runc create"):
        client.create_container("norun", make_spec(["/no/such/binary"]),
                                lowerdirs=[str(busybox_lower)])  # fmt: skip
    for cid in ("badspec", "badlower", "norun"):
        _assert_gone(agent, cid)
    files = client.setup_sandbox(
        hosts=b"127.0.0.1 localhost\n", resolv_conf=b"nameserver 10.0.0.1\n"
    )
    assert Path(files.resolv_conf_path).read_bytes() == b"nameserver 10.0.0.1\n"
    client.close()


def test_agent_survives_garbage_from_a_host(agent: AgentProcess) -> None:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(agent.socket))
    raw.sendall(b"\x00garbage" * 1000 + b"VMCA\x01\x03\x00\x00")
    raw.close()
    client = agent.client()
    assert client.ping().protocol_version == 1
    client.close()
