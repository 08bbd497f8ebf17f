"""The runc pods' launcher and zygote, without root: the request checks, podinit's helper
that is not our child, and the fall-back to an exec when the zygote cannot serve."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from vmcri.errors import HostCommandError
from vmcri.handlers.runc import zygote
from vmcri.handlers.runc.host import Helper, Peer
from vmcri.handlers.runc.launcher import MAX_FAILURES, TITLE_SPACE, ForkedHelper, Launcher


@pytest.mark.parametrize(
    ("request_", "fds"),
    [
        (["agent"], (0, 1, 2)),
        ({"run": "sh", "args": []}, (0, 1, 2)),
        ({"run": "agent", "args": "--listen x"}, (0, 1, 2)),
        ({"run": "agent", "args": [1]}, (0, 1, 2)),
        ({"run": "agent", "args": []}, (0, 1)),
    ],
)
def test_the_zygote_forks_nothing_for_a_bad_request(
    request_: object, fds: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(ValueError):
        zygote._fork(request_, fds)


def test_a_title_longer_than_the_argument_area_is_not_written() -> None:
    assert not zygote.set_title(["x" * (1 << 21)])


def _helper(output: bytes, ended: bool = True) -> tuple[ForkedHelper, subprocess.Popen[bytes]]:
    """A ForkedHelper over pipes that hold ``output`` (and its end, if ``ended``), its
    process a sleeper of ours, so that a kill shows."""
    proc = subprocess.Popen(["sleep", "60"])
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.close(in_read)
    os.write(out_write, output)
    if ended:
        os.close(out_write)
    else:
        OPEN.append(out_write)
    return ForkedHelper(proc.pid, in_write, out_read), proc


OPEN: list[int] = []


def test_podinits_status_is_its_last_line() -> None:
    helper, proc = _helper(b"ready 0\nexit 3\n")
    assert helper.readline(5) == "ready 0"
    assert helper.finish(5) == 3
    proc.kill()
    proc.wait()


def test_a_podinit_without_its_last_line_failed() -> None:
    helper, proc = _helper(b"ready 0\n")
    assert helper.readline(5) == "ready 0"
    assert helper.finish(5) == 1
    proc.kill()
    proc.wait()


def test_a_silent_podinit_is_killed_through_its_pidfd() -> None:
    helper, proc = _helper(b"", ended=False)  # it hangs without a word
    assert helper.finish(0.2) == -signal.SIGKILL
    assert proc.wait(5) == -signal.SIGKILL
    os.close(OPEN.pop())


class NoHelper:
    pid = 0

    def readline(self, timeout: float) -> str:
        return ""

    def send(self, line: str) -> None:
        pass

    def finish(self, timeout: float) -> int:
        return 0


class FailingZygoteHost:
    """start_peer fails; the exec'd helpers are recorded."""

    def __init__(self) -> None:
        self.peers = 0
        self.spawned: list[list[str]] = []
        self.helpers: list[list[str]] = []

    def start_peer(self, argv: Sequence[str], *, stderr_path: str) -> Peer:
        self.peers += 1
        raise HostCommandError("no zygote here")

    def spawn_detached(self, argv: Sequence[str], *, stderr_path: str) -> bytes:
        self.spawned.append(list(argv))
        return b"ready 42\n"

    def start_helper(self, argv: Sequence[str], *, stderr_path: str) -> Helper:
        self.helpers.append(list(argv))
        return NoHelper()


def test_without_a_zygote_the_helpers_are_execd_and_it_is_given_up_after_failures(
    tmp_path: Path,
) -> None:
    host = FailingZygoteHost()
    launcher = Launcher(host, "/usr/bin/python3", tmp_path / "zygote" / "zygote.log")  # type: ignore[arg-type]
    log = str(tmp_path / "agent.log")
    for _ in range(MAX_FAILURES + 2):
        assert launcher.spawn_agent(["--listen", "unix:///x"], stderr_path=log) == b"ready 42\n"
    assert host.peers == MAX_FAILURES
    argv = host.spawned[0]
    assert argv[:3] == ["/usr/bin/python3", "-S", "-c"] and argv[-2:] == ["--listen", "unix:///x"]
    launcher.start_podinit('{"create": []}', stderr_path=log)
    assert host.helpers == [
        ["/usr/bin/python3", "-S", "-m", "vmcri.handlers.runc.podinit", '{"create": []}']
    ]
    assert host.peers == MAX_FAILURES


def test_an_agent_whose_arguments_overflow_its_title_is_execd(tmp_path: Path) -> None:
    """A forked agent is found by its command line, which holds TITLE_SPACE bytes."""

    class NoPeerHost(FailingZygoteHost):
        def start_peer(self, argv: Sequence[str], *, stderr_path: str) -> Peer:
            raise AssertionError("asked the zygote")

    host = NoPeerHost()
    launcher = Launcher(host, "/usr/bin/python3", tmp_path / "zygote.log")  # type: ignore[arg-type]
    deep = ["--state-dir", "/" + "d" * TITLE_SPACE]
    assert launcher.spawn_agent(deep, stderr_path=str(tmp_path / "log")) == b"ready 42\n"
    assert host.spawned[0][-2:] == deep
