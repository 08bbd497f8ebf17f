"""The guest agent's maker of a pod's shared PID namespace (``agent/guest/pod_pid.py``), run
on the host as root with the real kernel: the pause it forks is PID 1 of the pinned
namespace, named for what it is, with an empty root, no capability, no inherited descriptor,
a cgroup namespace rooted at its own cgroup, and deaf to signals from inside."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from vmcri.agent.guest.mounts import LibcMounter
from vmcri.agent.guest.pod_pid import INFRA_CGROUP, PodPidNamespace
from vmcri.agent.guest.processes import Reaper, become_subreaper

pytestmark = pytest.mark.integration

UNIFIED = [Path(p) for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]


def _cgroup_root() -> Path:
    for root in UNIFIED:
        if (root / "cgroup.controllers").exists():
            return root
    pytest.skip("no cgroup v2 hierarchy on this host")


@pytest.fixture
def made(tmp_path: Path) -> Iterator[tuple[PodPidNamespace, int, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts)")
    assert become_subreaper()
    reaper = Reaper()
    reaper.start()
    root = _cgroup_root()
    mounter = LibcMounter()
    pod_pid = PodPidNamespace(tmp_path / "sandbox", reaper, mounter, root)
    path = pod_pid.ensure()
    pause = int((tmp_path / "sandbox" / "pause.pid").read_text())
    try:
        yield pod_pid, pause, root
    finally:
        mounter.umount(path, detach=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pause, signal.SIGKILL)
        reaper.watch(pause).wait(10)
        with contextlib.suppress(OSError):
            (root / INFRA_CGROUP).rmdir()


def test_the_pause_is_pid_1_of_the_pinned_namespace_and_holds_nothing(
    made: tuple[PodPidNamespace, int, Path],
) -> None:
    pod_pid, pause, root = made
    assert pod_pid.ensure() == str(pod_pid.path)  # a second call makes no second one
    assert os.stat(f"/proc/{pause}/ns/pid").st_ino == os.stat(pod_pid.path).st_ino
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
        ["nsenter", f"--pid={pod_pid.path}", "--", "sh", "-c", "for s in KILL TERM INT HUP; "
         "do kill -$s 1; done; kill -STOP 1"],
        check=True,
    )  # fmt: skip
    survived = subprocess.run(
        ["nsenter", f"--pid={pod_pid.path}", "--", "sh", "-c", "kill -0 1 && echo alive"],
        capture_output=True,
        text=True,
    )
    assert survived.stdout == "alive\n"
    state = Path(f"/proc/{pause}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state == "S", state  # sleeping, not stopped


def test_a_pause_that_dies_is_noticed_by_the_runtime_that_joins(
    made: tuple[PodPidNamespace, int, Path],
) -> None:
    pod_pid, pause, _root = made
    os.kill(pause, signal.SIGKILL)  # from outside (the agent's side) it ends
    wait_for(lambda: not Path(f"/proc/{pause}/ns").exists(), 10, "the pause's end")
    joined = subprocess.run(
        ["nsenter", f"--pid={pod_pid.path}", "--", "true"], capture_output=True, text=True
    )
    assert joined.returncode != 0  # a PID namespace without its init takes no process
