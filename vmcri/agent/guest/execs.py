"""Processes run in a container with ``runc exec``: ExecSync and interactive sessions.

Every exec runs as the container's own process with another command (exec_process.py),
handed to the runtime as a process file next to its pid file in the bundle's ``execs/``.
A session's output travels as OutputChunk events carrying its exec id, its end as one
ExecExited event; stdin and resize arrive as WriteStdin/Resize requests. runc exec always
detaches (runc.py says why): the process is the agent's child, waited for by its pid file.

Each exec runs in a group of its own (``exec_group.py``): an ExecSync that times out, and a
session that is killed, take every process they started with them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from vmcri.agent.guest.containers import Container, ContainerManager
from vmcri.agent.guest.exec_group import ExecGroup, kill_tree
from vmcri.agent.guest.exec_process import exec_process, oom_score_adj
from vmcri.agent.guest.processes import Waiter
from vmcri.agent.guest.runc import COMMAND_TIMEOUT_S
from vmcri.agent.guest.stdio import ConsoleSocket, Stdio, pump_pipes, pump_pty, set_winsize
from vmcri.api import agent_pb2
from vmcri.errors import (
    FailedPrecondition,
    HostCommandError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

MAX_EXEC_OUTPUT = 480 * 1024
"""Per stream cap of ExecSync output: both streams must fit one 1 MiB response frame."""
MAX_ARGV_BYTES = 128 * 1024
MAX_SESSIONS = 64
OUTPUT_DRAIN_S = 2.0
KILL_PID_WAIT_S = 2.0


class ExecSession:
    def __init__(self, exec_id: str, container: Container, group: ExecGroup | None) -> None:
        self.exec_id = exec_id
        self.container = container
        self.group = group
        self.stdio = Stdio()
        self.pid_file = container.bundle / "execs" / f"{exec_id}.pid"
        self.process_file = container.bundle / "execs" / f"{exec_id}.json"
        self.exited = threading.Event()
        self.killed = False

    def kill(self) -> None:
        """SIGKILL the session's process and everything it started."""
        self.killed = True
        kill_exec(self.group, self.pid_file)


def kill_exec(group: ExecGroup | None, pid_file: Path) -> None:
    """Kill an exec whole: its group, or (without one) its process tree from the pid file."""
    if group is not None:
        group.kill()
        return
    with contextlib.suppress(OSError, ValueError):
        kill_tree(int(pid_file.read_text().strip()))


def end_exec(group: ExecGroup | None, killed: bool) -> None:
    """After the exec's process ended: remove its group (a killed one once it is empty)."""
    if group is None:
        return
    if killed:
        group.kill()  # whatever raced the first kill (runc itself was killed after it)
        group.wait_empty()
    group.release()


@contextlib.contextmanager
def process_file(path: Path, process: Mapping[str, object]) -> Iterator[Path]:
    """The exec's OCI process written to ``path`` (a new file) until the block ends.

    ``path`` is in the agent's own bundle, never below the rootfs; still, a name that
    exists already (or is a link) is refused rather than followed or overwritten.
    Raises HostCommandError.
    """
    data = json.dumps(process).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise HostCommandError(f"cannot write the exec's process file {path}: {exc}") from exc
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        except OSError as exc:
            raise HostCommandError(f"cannot write the exec's process file {path}: {exc}") from exc
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _runc_cgroup(group: ExecGroup | None) -> str:
    return group.runc_arg if group is not None else ""


def _check_argv(argv: list[str]) -> list[str]:
    if not argv or not argv[0]:
        raise InvalidArgument("argv must not be empty")
    if sum(len(a) for a in argv) > MAX_ARGV_BYTES or any("\0" in a for a in argv):
        raise InvalidArgument("argv is too long or contains NUL")
    return argv


class ExecManager:
    def __init__(self, containers: ContainerManager) -> None:
        self._containers = containers
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _running(self, container_id: str) -> Container:
        container = self._containers.get(container_id)
        if container.status != agent_pb2.CONTAINER_STATUS_RUNNING:
            raise FailedPrecondition(f"container {container_id} is not running")
        return container

    def exec_sync(self, req: agent_pb2.ExecSyncRequest) -> agent_pb2.ExecSyncResponse:
        """Raises NotFound, FailedPrecondition (not running), InvalidArgument, HostCommandError."""
        container = self._running(req.container_id)
        argv = _check_argv(list(req.argv))
        limit = min(req.max_output_bytes or MAX_EXEC_OUTPUT, MAX_EXEC_OUTPUT)
        name = f"sync-{next(self._ids)}"
        pid_file = container.bundle / "execs" / f"{name}.pid"
        process = exec_process(container.process, argv, tty=False)
        runc = self._containers.runc
        group = self._group(container)
        timed_out = True
        try:
            with process_file(container.bundle / "execs" / f"{name}.json", process) as path:
                result = runc.run_exec(
                    runc.exec_argv(
                        container.container_id,
                        process_file=path,
                        pid_file=pid_file,
                        cgroup=_runc_cgroup(group),
                        oom_score_adj=oom_score_adj(process),
                    ),
                    pid_file=pid_file,
                    timeout=req.timeout_ms / 1000 if req.timeout_ms else None,
                    max_output=limit,
                    kill=lambda: kill_exec(group, pid_file),
                )
            timed_out = result.timed_out
        finally:
            end_exec(group, killed=timed_out)
            with contextlib.suppress(OSError):
                pid_file.unlink()
        return agent_pb2.ExecSyncResponse(
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            timed_out=result.timed_out,
            truncated=result.truncated,
        )

    def start(self, req: agent_pb2.ExecStartRequest) -> str:
        """Start an interactive session; returns its exec id.

        Raises NotFound, FailedPrecondition, InvalidArgument, ResourceExhausted, HostCommandError.
        """
        container = self._running(req.container_id)
        argv = _check_argv(list(req.argv))
        with self._lock:
            for key, old in list(container.execs.items()):
                if isinstance(old, ExecSession) and old.exited.is_set():
                    del container.execs[key]
            if len(container.execs) >= MAX_SESSIONS:
                raise ResourceExhausted(f"container {req.container_id} has too many exec sessions")
            session = ExecSession(f"exec-{next(self._ids)}", container, self._group(container))
            container.execs[session.exec_id] = session
        try:
            self._spawn(session, argv, req)
        except BaseException:
            with self._lock:
                container.execs.pop(session.exec_id, None)
            end_exec(session.group, killed=True)
            raise
        return session.exec_id

    def _group(self, container: Container) -> ExecGroup | None:
        cgroups = self._containers.cgroups
        return ExecGroup.create(cgroups.root, cgroups.unified, container.cgroup_path)

    def _spawn(
        self, session: ExecSession, argv: list[str], req: agent_pb2.ExecStartRequest
    ) -> None:
        process = exec_process(
            session.container.process, argv, tty=req.tty, rows=req.rows, cols=req.cols
        )
        # The runtime has read the file once it has started the process (or failed).
        with process_file(session.process_file, process) as path:
            if req.tty:
                waiter = self._start_tty(session, path, oom_score_adj(process), req)
            else:
                waiter = self._start_pipes(session, path, oom_score_adj(process), req)
        threading.Thread(
            target=self._monitor, args=(session, waiter), name=session.exec_id, daemon=True
        ).start()

    def _start_tty(
        self,
        session: ExecSession,
        path: Path,
        oom_adj: int | None,
        req: agent_pb2.ExecStartRequest,
    ) -> Waiter:
        runc = self._containers.runc
        cid = session.container.container_id
        name = f"{cid[:8]}-{session.exec_id[:12]}.tty"
        console = ConsoleSocket(self._containers.paths.console_socket(name))
        try:
            cmd = runc.exec_argv(
                cid, process_file=path, pid_file=session.pid_file,
                console_socket=console.path, cgroup=_runc_cgroup(session.group),
                oom_score_adj=oom_adj,
            )  # fmt: skip
            runc.run_detached_exec(cmd, f"runc exec --tty in {cid}")
            master = console.master()
        finally:
            console.close()
        try:
            pid = int(session.pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            os.close(master)
            raise HostCommandError(f"runc exec in {cid} wrote no pid file: {exc}") from exc
        waiter = self._containers.reaper.watch(pid)
        # The process file's consoleSize sized it already; this covers a runtime that
        # ignores it.
        set_winsize(master, req.rows, req.cols)
        emit = self._containers._output_emitter(cid, session.exec_id)
        pump_pty(session.stdio, master, emit, name=f"tty-{session.exec_id}")
        return waiter

    def _start_pipes(
        self,
        session: ExecSession,
        path: Path,
        oom_adj: int | None,
        req: agent_pb2.ExecStartRequest,
    ) -> Waiter:
        runc = self._containers.runc
        cid = session.container.container_id
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        in_r, in_w = os.pipe2(os.O_CLOEXEC) if req.stdin else (subprocess.DEVNULL, -1)
        try:
            cmd = runc.exec_argv(
                cid, process_file=path, pid_file=session.pid_file,
                cgroup=_runc_cgroup(session.group), oom_score_adj=oom_adj,
            )  # fmt: skip
            proc, waiter = runc.spawn(cmd, stdin=in_r, stdout=out_w, stderr=err_w)
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd >= 0:
                    os.close(fd)
        if in_w >= 0:
            session.stdio.stdin_fd = in_w
        # The runtime's own errors go to the session's stderr, like the process's.
        emit = self._containers._output_emitter(cid, session.exec_id)
        pump_pipes(session.stdio, out_r, err_r, emit, name=f"out-{session.exec_id}")
        try:
            return self._containers.reaper.started(
                proc, waiter, session.pid_file, COMMAND_TIMEOUT_S
            )
        except HostCommandError:
            session.stdio.close()
            raise

    def _monitor(self, session: ExecSession, waiter: Waiter) -> None:
        waiter.wait()
        session.stdio.join_output(OUTPUT_DRAIN_S)
        session.stdio.close()
        end_exec(session.group, killed=session.killed)
        with contextlib.suppress(OSError):
            Path(session.pid_file).unlink()

        def fill(event: agent_pb2.Event) -> None:
            event.exec_exited.container_id = session.container.container_id
            event.exec_exited.exec_id = session.exec_id
            event.exec_exited.exit_code = waiter.exit_code

        self._containers.events.append(fill)
        session.exited.set()

    def _stdio(self, container_id: str, exec_id: str) -> Stdio:
        container = self._containers.get(container_id)
        if not exec_id:
            return container.stdio
        session = container.execs.get(exec_id)
        if not isinstance(session, ExecSession):
            raise NotFound(f"exec session {exec_id[:80]!r} not found in {container_id}")
        return session.stdio

    def kill(self, req: agent_pb2.KillExecRequest) -> None:
        """SIGKILL an interactive session's process; an ended session is success.

        Raises NotFound for a session that never existed.
        """
        container = self._containers.get(req.container_id)
        session = container.execs.get(req.exec_id)
        if not isinstance(session, ExecSession):
            raise NotFound(f"exec session {req.exec_id[:80]!r} not found in {req.container_id}")
        # runc writes the pid file only once the process runs: a kill right after the
        # start may have to wait a moment for it.
        deadline = time.monotonic() + KILL_PID_WAIT_S
        while not session.pid_file.exists() and not session.exited.is_set():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not session.exited.is_set():
            session.kill()

    def write_stdin(self, req: agent_pb2.WriteStdinRequest) -> None:
        """Raises NotFound, FailedPrecondition (stdin closed).

        A container's own stdin closes only when it was created ``stdin_once`` (as in
        containerd and CRI-O): otherwise an attach that ends leaves it open for the next.
        """
        close = req.close
        if close and not req.exec_id:
            close = self._containers.get(req.container_id).stdin_once
        self._stdio(req.container_id, req.exec_id).write_stdin(req.data, close)

    def resize(self, req: agent_pb2.ResizeRequest) -> None:
        """Raises NotFound, FailedPrecondition (no tty), InvalidArgument."""
        if not (0 < req.rows <= 10000 and 0 < req.cols <= 10000):
            raise InvalidArgument(f"terminal size {req.rows}x{req.cols} is out of range")
        self._stdio(req.container_id, req.exec_id).resize(req.rows, req.cols)
