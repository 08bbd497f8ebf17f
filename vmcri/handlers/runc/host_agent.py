"""The runc backend's per-pod supervisor: the vmcri agent, run on the host.

The agent starts while the pod's namespaces are made (the two are independent), as a fork
of the runc pods' zygote (:mod:`vmcri.handlers.runc.launcher`), which has its modules
imported already.

The agent that runs a VM pod's containers in its guest runs a runc pod's containers on
the host, one process per pod (as ``containerd-shim-runc-v2`` is one per pod). It runs
``runc`` with a root of its own, is the subreaper of the pod's container processes,
holds their stdio, and reports output and exits as events over a unix socket with the
same protocol, framing, replay and bounds as the guest's. It starts in a session of its
own and outlives the daemon; a restarted daemon reconnects to it.

Per pod (``<sandbox dir>`` is the runc backend's ``sandboxes/<id>/``)::

    <state>/agents/<id>/state/      the agent's --state-dir: bundles, runc --root
    <state>/agents/<id>/agent.pid   its PID, checked against its command line before use
    <state>/agents/<id>/agent.log   its log (stderr)
    /run/vmcri/s/<12 hex>/          the agents' sockets: <16 hex>.agent, and runc's console
                                    sockets; <12 hex> names the backend's state dir
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from vmcri.errors import FailedPrecondition, HostCommandError
from vmcri.handlers.runc.host import Host
from vmcri.handlers.runc.launcher import Launcher
from vmcri.handlers.runc.layout import Layout, check_id

log = logging.getLogger(__name__)

MODULE = "vmcri.agent"
MAX_SOCKET_PATH = 107
SOCKET_ROOT = Path("/run/vmcri/s")
"""A unix socket path ends at 107 bytes and a state dir can be deep, so the sockets live in
a short directory of their own, as containerd's shims' do (``/run/containerd/s``)."""
EXIT_WAIT_S = 5.0


class HostAgents:
    """Start, find and stop the agent of each runc pod."""

    def __init__(self, host: Host, layout: Layout, launcher: Launcher, runc: str) -> None:
        self._host = host
        self._layout = layout
        self._launcher = launcher
        self._runc = runc

    def socket(self, sandbox_id: str) -> Path:
        return self.console_dir() / f"{sandbox_id[:16]}.agent"

    def console_dir(self) -> Path:
        """The backend's socket dir: agents' sockets, runc's console sockets (<= 25 bytes)."""
        digest = hashlib.sha256(str(self._layout.state.resolve()).encode()).hexdigest()
        return SOCKET_ROOT / digest[:12]

    def url(self, sandbox_id: str) -> str:
        return f"unix://{self.socket(sandbox_id)}"

    def log_path(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id) / "agent.log"

    def _dir(self, sandbox_id: str) -> Path:
        return self._layout.state / "agents" / check_id(sandbox_id, "sandbox id")

    def start(self, sandbox_id: str) -> int:
        """Start the pod's agent; returns once it listens. Raises HostCommandError."""
        return self.begin(sandbox_id)()

    def begin(self, sandbox_id: str) -> Callable[[], int]:
        """Start the pod's agent in the background; the function returned waits until it
        listens and returns its PID (raising HostCommandError if it did not start).

        Raises FailedPrecondition (socket paths too long, an agent already runs).
        """
        sock = self.socket(sandbox_id)
        longest = self.console_dir() / ("0" * 25)
        if len(str(longest)) > MAX_SOCKET_PATH:
            raise FailedPrecondition(
                f"state dir {self._layout.state} is too deep: the agent's socket paths "
                f"({longest}) exceed {MAX_SOCKET_PATH} bytes"
            )
        sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.pid(sandbox_id):
            raise FailedPrecondition(f"sandbox {sandbox_id}: its agent already runs")
        sock.unlink(missing_ok=True)
        directory = self._dir(sandbox_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = directory / "state"
        args = [
            "--listen", self.url(sandbox_id),
            "--state-dir", str(state),
            "--runc", self._runc,
            "--runc-root", str(state / "runc"),
            "--socket-dir", str(self.console_dir()),
            "--no-host-settings", "--poweroff", "no", "--daemonize",
        ]  # fmt: skip
        outcome: list[bytes | BaseException] = []

        def spawn() -> None:
            try:
                outcome.append(
                    self._launcher.spawn_agent(args, stderr_path=str(self.log_path(sandbox_id)))
                )
            except BaseException as exc:  # handed to the waiter
                outcome.append(exc)

        thread = threading.Thread(target=spawn, name=f"agent-start-{sandbox_id[:12]}")
        thread.start()

        def finish() -> int:
            thread.join()
            result = outcome[0]
            if isinstance(result, BaseException):
                raise result
            line = result.decode(errors="replace")
            word, _, rest = line.strip().partition(" ")
            if word != "ready" or not rest.isdigit():
                raise HostCommandError(
                    f"sandbox {sandbox_id}: the host agent did not start: "
                    f"{line.strip()[:300]!r} (see {self.log_path(sandbox_id)})"
                )
            pid = int(rest)
            (directory / "agent.pid").write_text(f"{pid}\n")
            return pid

        return finish

    def pid(self, sandbox_id: str) -> int:
        """The agent's PID if it runs (its command line names this pod's socket), else 0."""
        try:
            pid = int((self._dir(sandbox_id) / "agent.pid").read_text().strip())
        except (OSError, ValueError):
            return 0
        argv = self._host.cmdline(pid)
        if argv and self.url(sandbox_id) in argv and any(MODULE in a for a in argv):
            return pid
        return 0

    def stop(self, sandbox_id: str) -> None:
        """SIGTERM (it ends its session), SIGKILL if it lingers; idempotent."""
        pid = self.pid(sandbox_id)
        if pid:
            self._host.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, EXIT_WAIT_S) and self.pid(sandbox_id):
                log.warning(
                    "sandbox %s: host agent %d ignored SIGTERM; killing it", sandbox_id, pid
                )
                self._host.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket(sandbox_id))
        with contextlib.suppress(OSError):  # the last pod of this state dir: leave no dir
            os.rmdir(self.console_dir())
        if not self.pid(sandbox_id):
            # Its bundles hold no mounts (runc gets the rootfs the backend mounted).
            shutil.rmtree(self._dir(sandbox_id), ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` ended within ``timeout_s`` (it is not our child: a pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(fd)
