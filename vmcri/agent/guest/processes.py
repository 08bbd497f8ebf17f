"""Child processes of the agent: one reaper owns every wait.

In the guest the agent is PID 1, and on a host test it makes itself a child subreaper, so the
init process of every container becomes its child once ``runc create`` exits. That is how the
agent learns exit statuses without polling runc. It also means a single thread must own
``waitpid``: the ``subprocess`` module's own waits would race with it, so processes are started
with ``subprocess.Popen`` but always waited for through :class:`Reaper`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from vmcri.errors import HostCommandError

_MAX_UNCLAIMED = 256
IDLE_WAKE_S = 5.0
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (container inits) like PID 1 would; False if impossible."""
    if os.getpid() == 1:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False


def exit_code_of(status: int) -> int:
    """A wait status as a shell-style exit code: 128 + signal number when killed."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Waiter:
    """The future exit code of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._done = threading.Event()
        self.exit_code = -1

    def signal(self, sig: int) -> None:
        """Signal the process unless the reaper has collected it (its pid may be reused).

        Never ``Popen.kill()``/``send_signal()``: they poll, and a poll that reaps the
        process steals its exit from the reaper, whose waiter then never fires.
        """
        if not self.done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def set(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def wait_or_kill(
        self, timeout: float | None, before_kill: Callable[[], None] | None = None
    ) -> bool:
        """Wait up to ``timeout``; a process still running then is SIGKILLed (after
        ``before_kill``, e.g. to kill what it started) and waited for. True: it timed out."""
        if self.wait(timeout):
            return False
        if before_kill is not None:
            with contextlib.suppress(Exception):
                before_kill()
        self.signal(signal.SIGKILL)
        self.wait()
        return True

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, Waiter] = {}
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, pid: int) -> Waiter:
        """A waiter for ``pid``, a child (or adopted orphan) of this process."""
        with self._lock:
            waiter = self._waiters.get(pid)
            if waiter is None:
                waiter = Waiter(pid)
                status = self._unclaimed.pop(pid, None)
                if status is None:
                    self._waiters[pid] = waiter
                else:
                    waiter.set(exit_code_of(status))
        self._wake.set()
        return waiter

    def spawn(self, argv: Sequence[str], **popen: object) -> tuple[subprocess.Popen[bytes], Waiter]:
        """Start a process; never call its wait(): use the returned waiter.

        Raises:
            HostCommandError: the program cannot be started.
        """
        try:
            proc = subprocess.Popen(list(argv), **popen)  # type: ignore[call-overload]
        except OSError as exc:
            raise HostCommandError(f"cannot run {argv[0]}: {exc}") from exc
        waiter = self.watch(proc.pid)
        return proc, waiter

    def run(
        self,
        argv: Sequence[str],
        *,
        input_data: bytes | None = None,
        timeout: float | None = None,
        max_output: int = 1 << 20,
        on_timeout: Callable[[], None] | None = None,
    ) -> RunResult:
        """Run a command to completion with bounded output and an optional timeout.

        On timeout ``on_timeout`` runs (to kill what the command started) and then the command
        itself is killed. Raises HostCommandError if it cannot start.
        """
        proc, waiter = self.spawn(
            argv,
            stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        out = _BoundedReader(proc.stdout.fileno(), max_output)
        err = _BoundedReader(proc.stderr.fileno(), max_output)
        if input_data is not None:
            assert proc.stdin is not None
            threading.Thread(target=_feed, args=(proc.stdin, input_data), daemon=True).start()
        timed_out = waiter.wait_or_kill(timeout, on_timeout)
        proc.returncode = waiter.exit_code  # keeps Popen from ever waiting itself
        out.join(2.0)
        err.join(2.0)
        proc.stdout.close()
        proc.stderr.close()
        return RunResult(
            exit_code=waiter.exit_code,
            stdout=out.data(),
            stderr=err.data(),
            timed_out=timed_out,
            truncated=out.truncated or err.truncated,
        )

    def started(
        self,
        proc: subprocess.Popen[bytes],
        starter: Waiter,
        pid_file: Path,
        start_timeout: float,
    ) -> Waiter:
        """Once ``starter`` (a spawned command that starts a process, writes its pid to
        ``pid_file`` and exits) has ended: the started process's waiter, or the starter's
        own when it failed (its exit code is then the answer). A starter still running
        after ``start_timeout`` is killed. Raises HostCommandError: no pid file."""
        starter.wait_or_kill(start_timeout)
        proc.returncode = starter.exit_code  # keeps Popen from ever waiting itself
        if starter.exit_code != 0:
            return starter
        try:
            return self.watch(int(pid_file.read_text().strip()))
        except (OSError, ValueError) as exc:
            raise HostCommandError(f"the OCI runtime wrote no pid file {pid_file}: {exc}") from exc

    def run_started(
        self,
        argv: Sequence[str],
        *,
        pid_file: Path,
        timeout: float | None,
        max_output: int,
        on_timeout: Callable[[], None] | None = None,
        start_timeout: float = 60.0,
    ) -> RunResult:
        """Run a command that starts a process, writes its pid to ``pid_file`` and exits
        (``runc exec --detach``), then wait for that process; its stdout and stderr are
        collected (bounded) until it and whatever shares them close them, or briefly after.

        The started process is this process's child (adopted: PID 1 or subreaper), so what
        it leaves running in the background never delays the answer, whichever runtime
        started it (crun, in the foreground, waits for every orphan it adopts). A starter
        that fails answers with its own exit code and output. On timeout ``on_timeout``
        runs (to kill what the process started), then the process is killed.

        Raises HostCommandError if the command cannot start or wrote no pid file.
        """
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc, starter = self.spawn(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        out = _BoundedReader(out_r, max_output, owns=True)
        err = _BoundedReader(err_r, max_output, owns=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = self.started(proc, starter, pid_file, start_timeout)
        timed_out = False
        if waiter is not starter:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            timed_out = waiter.wait_or_kill(left, on_timeout)
        out.join(2.0)
        err.join(2.0)
        return RunResult(
            exit_code=waiter.exit_code,
            stdout=out.data(),
            stderr=err.data(),
            timed_out=timed_out,
            truncated=out.truncated or err.truncated,
        )

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                # No child: the next one comes from spawn(), whose watch() sets the event;
                # the timeout is a backstop, kept long (an idle guest pays for wake-ups).
                self._wake.wait(IDLE_WAKE_S)
                self._wake.clear()
                continue
            except InterruptedError:
                continue
            with self._lock:
                waiter = self._waiters.pop(pid, None)
                if waiter is None:
                    self._unclaimed[pid] = status
                    while len(self._unclaimed) > _MAX_UNCLAIMED:
                        self._unclaimed.popitem(last=False)
            if waiter is not None:
                waiter.set(exit_code_of(status))


class RunResult(NamedTuple):
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False

    def check(self, what: str) -> RunResult:
        """Self, or HostCommandError naming ``what`` if the command failed."""
        if self.exit_code != 0 or self.timed_out:
            tail = self.stderr.decode(errors="replace").strip()[-2000:]
            reason = "timed out" if self.timed_out else f"exit code {self.exit_code}"
            raise HostCommandError(
                f"{what} failed ({reason}): {tail}", returncode=self.exit_code, stderr=tail
            )
        return self


def _feed(pipe: object, data: bytes) -> None:
    with contextlib.suppress(OSError):
        pipe.write(data)  # type: ignore[attr-defined]
        pipe.close()  # type: ignore[attr-defined]


class _BoundedReader:
    """Reads a pipe to EOF on its own thread, keeping at most ``limit`` bytes; ``owns``: it
    closes the fd at the end (a caller that closed it earlier could see the number reused
    under a read still blocked on it)."""

    def __init__(self, fd: int, limit: int, owns: bool = False) -> None:
        self._fd = fd
        self._owns = owns
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.truncated = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._read()
        finally:
            if self._owns:
                os.close(self._fd)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            room = self._limit - self._size
            if len(chunk) > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            if chunk:
                self._chunks.append(chunk)
                self._size += len(chunk)

    def join(self, timeout: float) -> None:
        # A grandchild may keep the pipe open after the command exits: do not wait forever.
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def data(self) -> bytes:
        return b"".join(self._chunks)
