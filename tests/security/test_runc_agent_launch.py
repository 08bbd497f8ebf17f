"""A runc pod's agent is a fork of the zygote that forks every pod's agent and podinit: the
attacker is a container that has taken over its pod's agent (a runc or agent bug) and looks
in it for a way to the zygote, to another pod, or to the daemon.

It finds none: the agent holds no descriptor of the zygote's (its control socket forks
processes as root) nor any of another pod's, it is neither the zygote's nor the daemon's
child nor in their session, and its signal state, credentials, capabilities and cgroup are
those of an agent exec'd the old way. The zygote's end (``kill -9``) or the daemon's
leaves the pods' agents running, and the next pod gets a new zygote.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.host_agent import HostAgents
from vmcri.handlers.runc.launcher import Launcher
from vmcri.handlers.runc.layout import Layout

pytestmark = pytest.mark.integration

SAME_AS_EXECD = (
    "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
    "Seccomp", "SigBlk", "SigIgn", "SigCgt",
)  # fmt: skip


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def _fd_targets(pid: int) -> set[str]:
    fds = Path(f"/proc/{pid}/fd")
    return {os.readlink(fds / name) for name in os.listdir(fds)}


def _listening(agents: HostAgents, sandbox_id: str) -> bool:
    """Its log says it listens: it has set its signal handlers and opened its socket."""
    try:
        return "listening on" in agents.log_path(sandbox_id).read_text()
    except FileNotFoundError:
        return False


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[HostAgents, HostAgents, Launcher, list[str]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    host = RealHost()
    layout = Layout(tmp_path / "state", tmp_path / "root")
    forking = Launcher(host, sys.executable, tmp_path / "zygote.log")
    execing = Launcher(host, sys.executable, tmp_path / "unused.log", use_zygote=False)
    forked, execd = (
        HostAgents(host, layout, forking, "runc"),
        HostAgents(host, layout, execing, "runc"),
    )
    ids: list[str] = []
    yield forked, execd, forking, ids
    for sandbox_id in ids:
        forked.stop(sandbox_id)
    forking.close()


def test_a_forked_agent_holds_nothing_of_the_zygote_nor_of_another_pod(
    started: tuple[HostAgents, HostAgents, Launcher, list[str]],
) -> None:
    forked, execd, launcher, ids = started
    ids += [secrets.token_hex(32) for _ in range(3)]
    first, second = forked.start(ids[0]), forked.start(ids[1])
    reference = execd.start(ids[2])
    zygote = launcher.zygote_pid()
    assert zygote and zygote not in (first, second)
    for sandbox_id in ids:
        wait_for(partial(_listening, forked, sandbox_id), 30, f"agent {sandbox_id} listening")

    zygote_fds = {t for t in _fd_targets(zygote) if t.startswith(("socket:", "pipe:"))}
    assert zygote_fds, "the zygote's control socket"
    for pid, other, sandbox_id in ((first, second, ids[0]), (second, first, ids[1])):
        mine = _fd_targets(pid)
        assert not mine & zygote_fds, mine
        shared = {t for t in mine & _fd_targets(other) if t.startswith(("socket:", "pipe:", "/"))}
        assert shared <= {"/dev/null"}, shared
        assert str(forked.log_path(sandbox_id)) in mine  # its own log, as stderr

        status = _status(pid)
        assert int(status["PPid"]) not in (zygote, os.getpid()), status["PPid"]
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # a session of its own
        assert os.getsid(pid) != os.getsid(zygote)
        want = _status(reference)
        for key in SAME_AS_EXECD:
            assert status[key] == want[key], (key, status[key], want[key])
        assert (
            Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{reference}/cgroup").read_text()
        )
        assert forked.pid(sandbox_id) == pid  # found by its command line, as an exec'd one


def test_agents_outlive_the_zygote_and_the_daemon(
    started: tuple[HostAgents, HostAgents, Launcher, list[str]],
) -> None:
    forked, _, launcher, ids = started
    ids += [secrets.token_hex(32) for _ in range(3)]
    first = forked.start(ids[0])
    zygote = launcher.zygote_pid()
    os.kill(zygote, signal.SIGKILL)
    second = forked.start(ids[1])  # served the old way, and a new zygote for the next
    third = forked.start(ids[2])
    again = launcher.zygote_pid()
    assert again not in (0, zygote)
    launcher.close()  # as when the daemon ends: the zygote goes, the agents stay
    assert not Path(f"/proc/{again}").exists()
    for sandbox_id, pid in zip(ids, (first, second, third), strict=True):
        assert forked.pid(sandbox_id) == pid
        wait_for(partial(_listening, forked, sandbox_id), 30, f"agent {sandbox_id} listening")
