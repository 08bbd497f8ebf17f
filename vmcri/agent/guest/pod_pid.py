"""The PID namespace a VM pod shares (CRI NamespaceMode POD, kubelet's shareProcessNamespace).

It is not the guest's own: there the agent is PID 1 and every kernel thread is listed, so a
container's root could signal, trace or starve the agent, which is the whole pod. The agent
makes a PID namespace of the pod's below its own instead, once, at SetupSandbox: that is the
pod's set-up after a VM template's restore as after a cold boot (a template is saved before any
pod exists, so it holds none). Every container of the pod joins it through the pinned file
``<state>/sandbox/pid`` (``linux.namespaces`` ``path`` of its OCI spec), and an exec joins its
container's; the agent, its helpers and the kernel threads are in none of them.

Its PID 1 is the runc pods' infra process, started the same way: a process unshares the PID
namespace and calls :func:`vmcri.host.pause.start`, which forks the pause process
there (it reaps the pod's orphans and keeps the namespace alive: a PID namespace whose init
has exited takes no new process). On a host that process is the podinit helper; here it is a
fork of the agent, since a new interpreter costs seconds under emulation (3.4 s more per pod
measured with a helper) and a fork a few milliseconds. The fork runs only code whose modules
and libc are loaded before it, so the agent's other threads (and the locks they may hold) do
not matter. The pause is then the agent's child (PID 1 or subreaper adopts it) in a session
of its own: nothing ties it to a host connection, so it outlives a host that goes away and
comes back, and a repeated SetupSandbox finds the pinned namespace and makes no second one.
Signals sent from inside the namespace to its PID 1 are dropped unless PID 1 handles them,
and the pause handles only SIGCHLD: a container cannot end it. It hides the guest's files and
gives up its capabilities (``pause.py`` says why), and here it also gets a cgroup of its own
(INFRA_CGROUP) as the root of its own cgroup namespace: a container that enters its
namespaces finds nothing of the guest's.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from pathlib import Path

from vmcri.agent.guest.mounts import Mounter
from vmcri.agent.guest.processes import Reaper
from vmcri.errors import HostCommandError

SETUP_WAIT_S = 30.0
MAX_LINE = 64
MS_BIND = 0x1000
INFRA_CGROUP = "vmcri-infra"  # the pause's cgroup, beside the containers' (vmcri/<id>)


class PodPidNamespace:
    """Makes (once) and pins the pod's PID namespace below ``directory``."""

    def __init__(
        self, directory: Path, reaper: Reaper, mounter: Mounter, cgroup_root: Path
    ) -> None:
        """``cgroup_root``: the guest's cgroup v2 mount; the pause gets a cgroup of its own
        there (INFRA_CGROUP), beside the containers', as the root of its cgroup namespace."""
        self.path = directory / "pid"
        unified = (cgroup_root / "cgroup.controllers").exists()
        self._cgroup = str(cgroup_root / INFRA_CGROUP) if unified else ""
        self._dir = directory
        self._pid_file = directory / "pause.pid"
        self._reaper = reaper
        self._mounter = mounter
        self._lock = threading.Lock()

    def ensure(self) -> str:
        """The pinned namespace file, made on the first call. Raises HostCommandError."""
        with self._lock:
            if not self._mounter.is_mounted(str(self.path)):
                self._make()
        return str(self.path)

    def _make(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._pid_file.unlink(missing_ok=True)  # an earlier, failed attempt's
        pause = _fork_pause(str(self._pid_file), self._cgroup, self._reaper)
        try:
            self.path.touch(mode=0o444)
            self._mounter.mount(f"/proc/{pause}/ns/pid", str(self.path), "", MS_BIND, "")
            self._wait_for_pause(pause)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pause, signal.SIGKILL)
            with contextlib.suppress(HostCommandError):
                self._mounter.umount(str(self.path), detach=True)
            raise

    def _wait_for_pause(self, pause: int) -> None:
        """Until the pause has written its pid file, which it does once it is set up (an
        empty root, no capabilities). Raises HostCommandError if it died or hangs."""
        deadline = time.monotonic() + SETUP_WAIT_S
        while not self._pid_file.exists():
            if not _alive(pause):
                raise HostCommandError("pod PID namespace: its infra process exited setting up")
            if time.monotonic() > deadline:
                raise HostCommandError("pod PID namespace: its infra process did not set up")
            time.sleep(0.01)


def _fork_pause(pid_file: str, cgroup: str, reaper: Reaper) -> int:
    """Fork a child that unshares a PID namespace, starts the pause there and exits; returns
    the pause's pid. Raises HostCommandError."""
    from vmcri.host import pause  # loads libc: before the fork, not in it
    from vmcri.host.namespaces import CLONE_NEWPID, unshare

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked child; tested through the guest
        code = 1
        try:
            os.close(read_end)
            unshare(CLONE_NEWPID)
            os.write(write_end, b"%d\n" % pause.start(pid_file, False, cgroup))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    waiter = reaper.watch(child)
    try:
        line = _readline(read_end, SETUP_WAIT_S)
    finally:
        os.close(read_end)
        waiter.wait_or_kill(SETUP_WAIT_S)
    if waiter.exit_code != 0 or not line.isdigit():
        raise HostCommandError(f"pod PID namespace: cannot make it (exit {waiter.exit_code})")
    return int(line)


def _readline(fd: int, timeout: float) -> str:
    """One line from ``fd`` (at most MAX_LINE bytes), "" at EOF or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, MAX_LINE - len(data))
        if not chunk:
            break
        data += chunk
    return data.partition(b"\n")[0].decode(errors="replace").strip()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (the agent's reaper collects a dead one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
