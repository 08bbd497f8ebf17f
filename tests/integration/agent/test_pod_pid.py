"""The guest agent's maker of a pod's shared PID namespace (``agent/guest/pod_pid.py``), run
on the host as root with the real kernel: the pause it forks is PID 1 of the pinned
namespace, named for what it is, with an empty root, no capability, no inherited descriptor,
a cgroup namespace rooted at its own cgroup, and deaf to signals from inside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from vmcri.agent.guest.pod_pid import INFRA_CGROUP

pytestmark = pytest.mark.integration

UNIFIED = [Path(p) for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]


def _cgroup_root() -> Path:
    for root in UNIFIED:
        if (root / "cgroup.controllers").exists():
            return root
    pytest.skip("no cgroup v2 hierarchy on this host")


# The agent's side runs in a process of its own: it becomes a subreaper and starts the
# agent's Reaper, which waits for any child. In the test process that reaper would steal
# the exit status of every later subprocess (returncode 0 for all of them).
AGENT_SIDE = """
import contextlib, os, signal, sys
from pathlib import Path
from vmcri.agent.guest.mounts import LibcMounter
from vmcri.agent.guest.pod_pid import INFRA_CGROUP, PodPidNamespace
from vmcri.agent.guest.processes import Reaper, become_subreaper

directory, root = Path(sys.argv[1]), Path(sys.argv[2])
assert become_subreaper()
reaper = Reaper()
reaper.start()
mounter = LibcMounter()
pod_pid = PodPidNamespace(directory, reaper, mounter, root)
print(pod_pid.ensure(), flush=True)
pause = int((directory / "pause.pid").read_text())
for line in sys.stdin:  # "ensure": once more (it must make no second namespace)
    print(pod_pid.ensure(), flush=True)
mounter.umount(str(pod_pid.path), detach=True)
with contextlib.suppress(ProcessLookupError):
    os.kill(pause, signal.SIGKILL)
reaper.watch(pause).wait(10)
with contextlib.suppress(OSError):
    (root / INFRA_CGROUP).rmdir()
"""


@dataclass
class Made:
    """The pinned namespace an agent-side process made, and that process."""

    path: str
    pause: int
    root: Path
    agent: subprocess.Popen[str]

    def ensure(self) -> str:
        assert self.agent.stdin is not None and self.agent.stdout is not None
        self.agent.stdin.write("ensure\n")
        self.agent.stdin.flush()
        return self.agent.stdout.readline().strip()


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Made]:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts)")
    root = _cgroup_root()
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_SIDE, str(tmp_path / "sandbox"), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        path = agent.stdout.readline().strip()
        assert path == str(tmp_path / "sandbox" / "pid"), path
        pause = int((tmp_path / "sandbox" / "pause.pid").read_text())
        yield Made(path, pause, root, agent)
    finally:
        assert agent.stdin is not None
        agent.stdin.close()
        assert agent.wait(30) == 0


def test_the_pause_is_pid_1_of_the_pinned_namespace_and_holds_nothing(made: Made) -> None:
    pause, root = made.pause, made.root
    assert made.ensure() == made.path  # a second call makes no second one
    assert os.stat(f"/proc/{pause}/ns/pid").st_ino == os.stat(made.path).st_ino
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pause}/status").read_text().splitlines()
    )
    assert status["NSpid"].split()[-1] == "1"
    assert status["Name"].strip() == "vmcri-pause"
    assert Path(f"/proc/{pause}/cmdline").read_bytes().rstrip(b"\0") == b"vmcri-pause"
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == 0, field
    assert status["NoNewPrivs"].strip() == "1"
    assert os.listdir(f"/proc/{pause}/root") == []
    assert sorted(os.listdir(f"/proc/{pause}/fd")) == ["0", "1", "2"]
    assert os.readlink(f"/proc/{pause}/fd/0") == "/dev/null"

    # Its cgroup is its own, and the root of its cgroup namespace.
    assert Path(f"/proc/{pause}/cgroup").read_text().strip().endswith(f"/{INFRA_CGROUP}")
    seen = subprocess.run(
        ["nsenter", "-t", str(pause), "-C", "--", "cat", f"/proc/{pause}/cgroup"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "0::/\n" in seen, seen  # its cgroup, as its own namespace sees it: the root
    assert (root / INFRA_CGROUP / "cgroup.procs").read_text().split() == [str(pause)]

    # From inside its namespace, nothing ends it.
    subprocess.run(
        ["nsenter", f"--pid={made.path}", "--", "sh", "-c", "for s in KILL TERM INT HUP; "
         "do kill -$s 1; done; kill -STOP 1"],
        check=True,
    )  # fmt: skip
    survived = subprocess.run(
        ["nsenter", f"--pid={made.path}", "--", "sh", "-c", "kill -0 1 && echo alive"],
        capture_output=True,
        text=True,
    )
    assert survived.stdout == "alive\n"
    state = Path(f"/proc/{pause}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state == "S", state  # sleeping, not stopped


def test_a_pause_that_dies_is_noticed_by_the_runtime_that_joins(made: Made) -> None:
    pause = made.pause
    os.kill(pause, signal.SIGKILL)  # from outside (the agent's side) it ends
    wait_for(lambda: not Path(f"/proc/{pause}/ns").exists(), 10, "the pause's end")
    joined = subprocess.run(
        ["nsenter", f"--pid={made.path}", "--", "true"], capture_output=True, text=True
    )
    assert joined.returncode != 0  # a PID namespace without its init takes no process
