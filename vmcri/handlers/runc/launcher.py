"""Starts a runc pod's Python processes, its agent and its podinit helper, as forks of the
zygote (:mod:`vmcri.handlers.runc.zygote`), or exec'd as before when there is none.

The zygote is started with the backend (an exec'd interpreter with the agent's imports,
~0.1 s, once per daemon) and then answers each with a fork (~2 ms), where an
exec'd agent cost 80 ms and podinit 35 ms of a RunPodSandbox. It is the daemon's child
and ends with it (its control socket reads empty); the pods' processes do not. When it
cannot answer (it died, it timed out, a fork failed) the request is served the old way, an
exec, and the next one starts a new zygote; after :data:`MAX_FAILURES` failures in a row
the launcher execs only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from vmcri.errors import HostCommandError
from vmcri.handlers.runc.host import VMCRI_PATH, Helper, Host, Peer, helper_argv

log = logging.getLogger(__name__)

AGENT_BOOTSTRAP = (
    "import sys; sys.path[:0] = sys.argv.pop(1).split(':'); "
    "from vmcri.agent.main import main; sys.exit(main(sys.argv[1:]))"
)
ZYGOTE_BOOTSTRAP = (
    "import sys; sys.path[:0] = sys.argv.pop(1).split(':'); "
    "from vmcri.handlers.runc.zygote import main; sys.exit(main())"
)
PODINIT = "vmcri.handlers.runc.podinit"
AGENT_TITLE = "vmcri.agent"  # what a forked agent's command line starts with (zygote.TITLES)
TITLE_SPACE = 4096
"""Bytes of the zygote's command line kept for the title of what it forks (``set_title``):
an agent's arguments are its socket URL and four paths, well under this."""
ANSWER_WAIT_S = 30.0
FIRST_LINE_WAIT_S = 30.0
MAX_FAILURES = 3
MAX_ANSWER = 4096


class ZygoteUnavailable(Exception):
    """The zygote did not answer a request; the caller execs instead."""


class Launcher:
    """Starts the agent and podinit of runc pods; one per backend."""

    def __init__(self, host: Host, python: str, zygote_log: Path, use_zygote: bool = True) -> None:
        self._host = host
        self._python = python
        self._log = zygote_log
        self._lock = threading.Lock()
        self._zygote: Peer | None = None
        self._failures = 0 if use_zygote else MAX_FAILURES

    def spawn_agent(self, args: Sequence[str], *, stderr_path: str) -> bytes:
        """Start a pod's agent (``--daemonize``); the first line it writes (``ready PID``).

        Raises HostCommandError.
        """
        try:
            return self._fork_agent(args, stderr_path)
        except ZygoteUnavailable:
            argv = [self._python, "-S", "-c", AGENT_BOOTSTRAP, ":".join(import_path()), *args]
            return self._host.spawn_detached(argv, stderr_path=stderr_path)

    def start_podinit(self, plan: str, *, stderr_path: str) -> Helper:
        """Start podinit with its plan, to be driven in lines. Raises HostCommandError."""
        try:
            return self._fork_podinit(plan, stderr_path)
        except ZygoteUnavailable:
            argv = helper_argv(self._python, PODINIT, plan)
            return self._host.start_helper(argv, stderr_path=stderr_path)

    def warm(self) -> None:
        """Start the zygote now rather than at the first pod (it imports while we go on)."""
        with self._lock:
            if self._failures < MAX_FAILURES:
                try:
                    self._started()
                except HostCommandError as exc:
                    log.warning("runc pods' zygote did not start: %s", exc)

    def zygote_pid(self) -> int:
        """The zygote's pid, 0 while there is none."""
        with self._lock:
            return self._zygote.pid if self._zygote is not None else 0

    def close(self) -> None:
        """Stop the zygote (the processes it forked stay)."""
        with self._lock:
            self._drop()

    # ---- through the zygote ----------------------------------------------------------

    def _fork_agent(self, args: Sequence[str], stderr_path: str) -> bytes:
        if len("\0".join([AGENT_TITLE, *args]).encode()) >= TITLE_SPACE:
            # Its command line would not hold them, and the agent is found by it: exec.
            raise ZygoteUnavailable
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            with _stdio(stderr_path, os.devnull, write_end) as (stdin, stderr):
                self._request("agent", args, (stdin, write_end, stderr))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with open(read_end, "rb") as out:
            if not _readable(out.fileno(), FIRST_LINE_WAIT_S):
                raise HostCommandError(f"the host agent said nothing for {FIRST_LINE_WAIT_S} s")
            return out.readline()

    def _fork_podinit(self, plan: str, stderr_path: str) -> Helper:
        in_read, in_write = os.pipe2(os.O_CLOEXEC)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        try:
            with _stdio(stderr_path, None, in_read) as (_, stderr):
                pid = self._request("podinit", [plan], (in_read, out_write, stderr))
        except BaseException:
            os.close(in_write)
            os.close(out_read)
            raise
        finally:
            os.close(in_read)
            os.close(out_write)
        return ForkedHelper(pid, in_write, out_read)

    def _request(self, run: str, args: Sequence[str], fds: Sequence[int]) -> int:
        """The pid of the child the zygote forked. Raises ZygoteUnavailable."""
        message = json.dumps({"run": run, "args": list(args)}).encode()
        with self._lock:
            if self._failures >= MAX_FAILURES:
                raise ZygoteUnavailable
            try:
                zygote = self._started()
                zygote.channel.settimeout(ANSWER_WAIT_S)
                socket.send_fds(zygote.channel, [message], list(fds))
                answer = json.loads(zygote.channel.recv(MAX_ANSWER) or b"null")
                if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int):
                    raise ValueError(f"answered {answer!r}"[:300])
            except (OSError, ValueError, HostCommandError) as exc:
                self._failures += 1
                log.warning(
                    "runc pods' zygote failed (%s), %s the %s the old way",
                    exc,
                    "restarting it; starting" if self._failures < MAX_FAILURES else "starting",
                    run,
                )
                self._drop()
                raise ZygoteUnavailable from exc
            self._failures = 0
            return int(answer["pid"])

    def _started(self) -> Peer:
        if self._zygote is None:
            # 0700 for its own dir only: a user-namespaced pod's root must pass the others.
            self._log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            argv = [self._python, "-S", "-c", ZYGOTE_BOOTSTRAP, ":".join(import_path())]
            self._zygote = self._host.start_peer(
                [*argv, " " * TITLE_SPACE], stderr_path=str(self._log)
            )
        return self._zygote

    def _drop(self) -> None:
        if self._zygote is not None:
            with contextlib.suppress(OSError):
                self._zygote.stop()
            self._zygote = None


@contextlib.contextmanager
def _stdio(stderr_path: str, stdin_path: str | None, placeholder: int) -> Iterator[tuple[int, int]]:
    """(stdin, stderr) descriptors for a request, closed after it: ``stdin_path`` opened for
    reading (else ``placeholder``), the log opened for appending."""
    stdin = os.open(stdin_path, os.O_RDONLY | os.O_CLOEXEC) if stdin_path else placeholder
    try:
        stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            yield stdin, stderr
        finally:
            os.close(stderr)
    finally:
        if stdin_path:
            os.close(stdin)


class ForkedHelper:
    """podinit forked by the zygote: not our child, so its exit status is its last line
    (``exit N``) and it is killed through a pidfd, which cannot name a reused pid."""

    def __init__(self, pid: int, stdin: int, stdout: int) -> None:
        self.pid = pid
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # it has already ended (and its output says how)
            self._pidfd = None
        self._stdin = open(stdin, "wb")  # noqa: SIM115 - closed by finish()
        self._stdout = open(stdout, "rb")  # noqa: SIM115 - closed by finish()
        self._status: int | None = None

    def readline(self, timeout: float) -> str:
        while True:
            if not _readable(self._stdout.fileno(), timeout):
                raise HostCommandError(f"helper {self.pid} said nothing for {timeout:.0f} s")
            line = self._stdout.readline().decode(errors="replace").rstrip("\n")
            word, _, rest = line.partition(" ")
            if word != "exit" or not rest.lstrip("-").isdigit():
                return line
            self._status = int(rest)  # its end: the next read is the end of output

    def send(self, line: str) -> None:
        try:
            self._stdin.write(line.encode() + b"\n")
            self._stdin.flush()
        except OSError as exc:
            raise HostCommandError(f"helper {self.pid}: {exc}") from exc

    def finish(self, timeout: float) -> int:
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            while self._status is None and self.readline(timeout):
                pass
        except HostCommandError:
            self._kill()
            return -int(signal.SIGKILL)
        finally:
            self._stdout.close()
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return 1 if self._status is None else self._status  # no last line: it was killed

    def _kill(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


def _readable(fd: int, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def import_path() -> list[str]:
    """Where the agent's imports are: vmcri and protobuf (the only package it needs)."""
    import google.protobuf

    site = Path(google.protobuf.__file__).resolve().parent.parent.parent
    return [VMCRI_PATH, str(site)]
