"""The PID namespace a VM pod shares (CRI NamespaceMode POD, kubelet's shareProcessNamespace).

It is not the guest's own: there the agent is PID 1 and every kernel thread is listed, so a
container's root could signal, trace or starve the agent, which is the whole pod. The agent
makes a PID namespace of the pod's below its own instead, once, at SetupSandbox: that is the
pod's set-up after a VM template's restore as after a cold boot (a template is saved before any
pod exists, so it holds none). Every container of the pod joins it through the pinned file
``<state>/sandbox/pid`` (``linux.namespaces`` ``path`` of its OCI spec), and an exec joins its
container's; the agent, its helpers and the kernel threads are in none of them.

Its PID 1 is the runc pod's infra process, made the same way: the agent runs the runc
handler's namespace helper (:mod:`vmcri.handlers.runc.podinit`) with a plan that creates a PID
namespace only, and the helper forks PID 1 there, the pause process
(:mod:`vmcri.handlers.runc.pause`), which reaps the pod's orphans and keeps the namespace alive
(a PID namespace whose init has exited takes no new process). Like containers' inits, it is
the agent's child once the helper has exited (PID 1 or subreaper adopts it), in a session of
its own: nothing ties it to a host connection, so it outlives a host that goes away and comes
back, and a repeated SetupSandbox finds the pinned namespace and makes no second one. Signals
sent from inside the namespace to its PID 1 are dropped unless PID 1 handles them, and the
pause handles only SIGCHLD: a container cannot end it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from vmcri.agent.guest.mounts import Mounter
from vmcri.agent.guest.processes import Reaper
from vmcri.errors import HostCommandError

HELPER = "vmcri.handlers.runc.podinit"
HELPER_WAIT_S = 30.0
MAX_LINE = 4096
MS_BIND = 0x1000


class PodPidNamespace:
    """Makes (once) and pins the pod's PID namespace below ``directory``."""

    def __init__(
        self, directory: Path, reaper: Reaper, mounter: Mounter, python: str = sys.executable
    ) -> None:
        self.path = directory / "pid"
        self._dir = directory
        self._reaper = reaper
        self._mounter = mounter
        self._python = python
        self._lock = threading.Lock()

    def ensure(self) -> str:
        """The pinned namespace file, made on the first call. Raises HostCommandError."""
        with self._lock:
            if not self._mounter.is_mounted(str(self.path)):
                self._make()
        return str(self.path)

    def _make(self) -> None:
        from vmcri.handlers.runc import podinit  # the helper's plan; imported only when needed

        self._dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        (self._dir / "pause.pid").unlink(missing_ok=True)  # an earlier, failed attempt's
        plan = podinit.plan({"pid": True}, "", {}, str(self._dir / "pause.pid"))
        with open(self._dir / "podinit.log", "wb") as log:
            proc, waiter = self._reaper.spawn(
                [self._python, "-S", "-m", HELPER, plan],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdin is not None and proc.stdout is not None
        pause = 0
        try:
            line = _readline(proc.stdout.fileno(), HELPER_WAIT_S)
            word, _, rest = line.partition(" ")
            if word != "ready" or not rest.isdigit():
                raise HostCommandError(f"pod PID namespace: {rest or line or 'helper died'}")
            pause = int(rest)
            self.path.touch(mode=0o444)
            self._mounter.mount(f"/proc/{pause}/ns/pid", str(self.path), "", MS_BIND, "")
        except BaseException:
            if pause:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pause, signal.SIGKILL)
            raise
        finally:
            proc.stdin.close()  # the helper exits; the pause stays, adopted by the agent
            proc.stdout.close()
            waiter.wait_or_kill(HELPER_WAIT_S)
            proc.returncode = waiter.exit_code  # keeps Popen from ever waiting itself
        if waiter.exit_code != 0:
            raise HostCommandError(f"pod PID namespace: helper exited with {waiter.exit_code}")
        self._wait_for_pause(pause)

    def _wait_for_pause(self, pause: int) -> None:
        """Until the pause has written its pid file, which it does once it is set up (an
        empty root, no capabilities); one that died or hangs is killed, the pin undone."""
        pid_file = self._dir / "pause.pid"
        deadline = time.monotonic() + HELPER_WAIT_S
        while not pid_file.exists():
            gone = not _alive(pause)
            if gone or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pause, signal.SIGKILL)
                self._mounter.umount(str(self.path), detach=True)
                raise HostCommandError(
                    "pod PID namespace: its infra process "
                    + ("exited while setting up" if gone else "did not set up in time")
                    + f" (see {self._dir / 'podinit.log'})"
                )
            time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (the agent's reaper collects a dead one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
