"""Stdio of containers and exec sessions: pipes or a pty, pumped into output events.

The agent, not the host, holds every container's stdout/stderr, so a container never blocks on
its output while the host is away; the event log bounds what is kept meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import socket
import termios
import threading
from collections.abc import Callable
from pathlib import Path

from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, HostCommandError

CHUNK = 32 * 1024
"""Bytes per output event: well below the frame limit, large enough to be cheap."""

Emit = Callable[[int, bytes, bool], None]
"""emit(stream, data, eof): publish one output chunk (stream is an OutputStream value)."""


class OutputPump:
    """Reads one fd to EOF on its own thread and publishes each chunk."""

    def __init__(self, fd: int, stream: int, emit: Emit, *, name: str) -> None:
        self._fd = fd
        self._stream = stream
        self._emit = emit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._fd, CHUNK)
                except OSError:  # EIO: the pty's last writer is gone
                    break
                if not data:
                    break
                self._emit(self._stream, data, False)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._emit(self._stream, b"", True)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Stdio:
    """The agent's ends of one process's stdio: stdin writer, output pumps, pty master."""

    def __init__(self) -> None:
        self.stdin_fd: int | None = None
        self.pty_fd: int | None = None
        self.pumps: list[OutputPump] = []
        self._lock = threading.Lock()

    def write_stdin(self, data: bytes, close: bool) -> None:
        """Raises FailedPrecondition if stdin is not open."""
        with self._lock:
            fd = self.stdin_fd if self.stdin_fd is not None else self.pty_fd
            if fd is None:
                raise FailedPrecondition("stdin is not open")
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                raise FailedPrecondition(f"stdin is closed: {exc}") from exc
            if close and self.stdin_fd is not None:
                os.close(self.stdin_fd)
                self.stdin_fd = None
            elif close and self.pty_fd is not None:
                # A tty has no separate stdin to close: send EOF (^D) as a terminal would.
                with contextlib.suppress(OSError):
                    os.write(self.pty_fd, b"\x04")

    def resize(self, rows: int, cols: int) -> None:
        """Raises FailedPrecondition if there is no tty."""
        if self.pty_fd is None:
            raise FailedPrecondition("the process has no tty")
        try:
            termios.tcsetwinsize(self.pty_fd, (rows, cols))
        except OSError as exc:
            raise FailedPrecondition(f"cannot resize the tty: {exc}") from exc

    def join_output(self, timeout: float) -> None:
        for pump in self.pumps:
            pump.join(timeout)

    def close(self) -> None:
        with self._lock:
            if self.stdin_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.stdin_fd)
                self.stdin_fd = None
        # The pumps close the output fds and the pty master themselves at EOF.


def pump_pipes(stdio: Stdio, stdout_r: int, stderr_r: int, emit: Emit, name: str) -> None:
    stdio.pumps.append(OutputPump(stdout_r, agent_pb2.OUTPUT_STREAM_STDOUT, emit, name=name))
    stdio.pumps.append(OutputPump(stderr_r, agent_pb2.OUTPUT_STREAM_STDERR, emit, name=name))


def pump_pty(stdio: Stdio, master: int, emit: Emit, name: str) -> None:
    # The pump closes the master at EOF; keep a duplicate for stdin and resize.
    stdio.pty_fd = os.dup(master)
    stdio.pumps.append(OutputPump(master, agent_pb2.OUTPUT_STREAM_STDOUT, emit, name=name))


class ConsoleSocket:
    """The unix socket on which runc sends the pty master of a ``terminal: true`` process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(1)
        self._master: int | None = None
        self._error = ""
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        self._sock.settimeout(60.0)
        try:
            conn, _ = self._sock.accept()
            with conn:
                conn.settimeout(60.0)
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
                if fds:
                    self._master = fds[0]
        except OSError as exc:
            self._error = str(exc)

    def master(self, timeout: float = 10.0) -> int:
        """The pty master fd. Raises HostCommandError if runc did not send one."""
        self._thread.join(timeout)
        self.close()
        if self._master is None:
            raise HostCommandError(f"runc sent no console: {self._error or 'timed out'}")
        return self._master

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def set_winsize(fd: int, rows: int, cols: int) -> None:
    if rows and cols:
        with contextlib.suppress(OSError):
            termios.tcsetwinsize(fd, (rows, cols))
