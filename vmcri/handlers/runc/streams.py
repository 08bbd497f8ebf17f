"""Streaming sessions of the runc backend: interactive ``runc exec``, attach, port-forward.

Exec without a tty runs ``runc exec`` in the foreground on pipes. With a tty, the daemon
opens a pty pair and runs ``setsid --ctty runc exec --tty`` on its slave: runc makes the
container's own pty, copies between the two, and applies our window size whenever we
resize the outer pty (the kernel sends it SIGWINCH). Either way runc stays the parent of
the process and exits with its exit code; ending a session early SIGKILLs the process
(its host pid is in runc's ``--pid-file``) while runc is still alive to vouch for the pid.

Attach: the container's monitor owns its stdio and serves ``attach.sock`` in the
container's state dir (:mod:`vmcri.handlers.runc.attach_hub`); a session is one
connection to it, carrying frames of :mod:`vmcri.handlers.runc.attach_frames`.

Port-forward: a socket belongs to the network namespace it was created in, so a
throwaway thread joins the pod's namespace (setns(2) changes only the calling thread's),
connects there and ends; the daemon then relays on the plain socket. No other work ever
runs on that thread, so nothing else can end up in the pod's network by mistake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import signal
import socket
import subprocess
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from vmcri.errors import FailedPrecondition, HostCommandError, Unavailable
from vmcri.handlers.base import StreamOutput
from vmcri.handlers.runc import attach_frames as af
from vmcri.handlers.runc.runc_cli import Runc
from vmcri.host.namespaces import CLONE_NEWNET, setns

log = logging.getLogger(__name__)

READ_CHUNK = 32 * 1024
OUTPUT_QUEUE = 64  # chunks; a slow client slows the process, nothing is dropped
DIAL_TIMEOUT_S = 10.0
PID_FILE_WAIT_S = 2.0
DEFAULT_TTY_SIZE = (24, 80)  # rows, cols until the client sends its size


class RuncExecSession:
    """Implements :class:`vmcri.handlers.base.ProcessSession` for one ``runc exec``."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        pid_file: Path,
        outputs: dict[int, Literal["stdout", "stderr"]],
        stdin_fd: int | None,
        tty_fd: int | None,
    ) -> None:
        self._proc = proc
        self._pid_file = pid_file
        self._stdin_fd = stdin_fd
        self._tty_fd = tty_fd
        self._queue: queue.Queue[StreamOutput | None] = queue.Queue(OUTPUT_QUEUE)
        self._closed = threading.Event()
        self._open_streams = len(outputs)
        self._lock = threading.Lock()
        for fd, name in outputs.items():
            threading.Thread(
                target=self._pump, args=(fd, name), name=f"runc-exec-{name}", daemon=True
            ).start()

    def _pump(self, fd: int, name: Literal["stdout", "stderr"]) -> None:
        try:
            while not self._closed.is_set():
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError:  # EIO: the pty's last writer is gone
                    data = b""
                self._put(StreamOutput(name, data))
                if not data:
                    return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _put(self, item: StreamOutput) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def output(self) -> Iterator[StreamOutput]:
        remaining = self._open_streams
        while remaining and not self._closed.is_set():
            item = self._queue.get()
            if item is None:
                return
            if not item.data:
                remaining -= 1
            yield item

    def _kill_process(self) -> None:
        """SIGKILL the exec'd process while runc (its parent) has not reaped it.

        runc writes the pid file only after the process started running, so a session
        closed right away may have to wait a moment for it.
        """
        deadline = time.monotonic() + PID_FILE_WAIT_S
        while self._proc.poll() is None:
            try:
                os.kill(int(self._pid_file.read_text().strip()), signal.SIGKILL)
                return
            except (FileNotFoundError, ValueError):
                if time.monotonic() > deadline:
                    log.warning("runc exec session: no pid file; killing runc alone")
                    return
                time.sleep(0.01)
            except OSError as exc:
                log.warning("runc exec session: cannot kill its process: %s", exc)
                return

    def write_stdin(self, data: bytes) -> None:
        fd = self._stdin_fd if self._stdin_fd is not None else self._tty_fd
        if fd is None:
            raise FailedPrecondition("the exec session has no stdin")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise FailedPrecondition(f"stdin is closed: {exc.strerror}") from exc

    def close_stdin(self) -> None:
        with self._lock:
            if self._stdin_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._stdin_fd)
                self._stdin_fd = None
            elif self._tty_fd is not None and not self._closed.is_set():
                with contextlib.suppress(OSError):
                    os.write(self._tty_fd, b"\x04")  # a terminal's EOF: ^D

    def resize(self, width: int, height: int) -> None:
        if self._tty_fd is not None:
            with contextlib.suppress(OSError):
                termios.tcsetwinsize(self._tty_fd, (height, width))

    def wait(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        if self._proc.poll() is None:
            self._kill_process()
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        for fd in (self._stdin_fd, self._tty_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._stdin_fd = self._tty_fd = None
        self._pid_file.unlink(missing_ok=True)


def start_exec(
    runc: Runc,
    container_id: str,
    cmd: Sequence[str],
    *,
    tty: bool,
    stdin: bool,
    exec_dir: Path,
) -> RuncExecSession:
    """Start ``cmd`` in the container. Raises HostCommandError if runc cannot be started."""
    exec_dir.mkdir(parents=True, exist_ok=True)
    pid_file = exec_dir / f"{secrets.token_hex(8)}.pid"
    if tty:
        return _start_tty(runc, container_id, cmd, pid_file)
    argv = runc.argv("exec", "--pid-file", str(pid_file), container_id, *cmd)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise HostCommandError(f"runc exec in {container_id}: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stdin_fd = os.dup(proc.stdin.fileno()) if proc.stdin is not None else None
    outputs: dict[int, Literal["stdout", "stderr"]] = {
        os.dup(proc.stdout.fileno()): "stdout",
        os.dup(proc.stderr.fileno()): "stderr",
    }
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return RuncExecSession(proc, pid_file, outputs, stdin_fd, None)


def _start_tty(
    runc: Runc, container_id: str, cmd: Sequence[str], pid_file: Path
) -> RuncExecSession:
    master, slave = os.openpty()
    termios.tcsetwinsize(master, DEFAULT_TTY_SIZE)
    argv = [
        "setsid", "--ctty",
        *runc.argv("exec", "--tty", "--pid-file", str(pid_file), container_id, *cmd),
    ]  # fmt: skip
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
    except OSError as exc:
        os.close(master)
        raise HostCommandError(f"runc exec --tty in {container_id}: {exc}") from exc
    finally:
        os.close(slave)
    return RuncExecSession(proc, pid_file, {os.dup(master): "stdout"}, None, master)


class SocketPortConnection:
    """Implements :class:`vmcri.handlers.base.PortConnection` on a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.settimeout(None)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, max_bytes: int) -> bytes:
        return self._sock.recv(max_bytes)

    def close_write(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def dial(netns_path: str, port: int) -> SocketPortConnection:
    """Connect to 127.0.0.1:``port`` in the network namespace at ``netns_path``.

    An empty path means the host's namespace (a hostNetwork pod). Raises Unavailable
    when nothing accepts the connection, HostCommandError when the namespace cannot
    be joined.
    """
    if not netns_path:
        return SocketPortConnection(_connect(port))
    outcome: list[socket.socket | BaseException] = []

    def in_namespace() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
        except OSError as exc:
            outcome.append(HostCommandError(f"join the pod network {netns_path}: {exc}"))
            return
        try:
            outcome.append(_connect(port))
        except Unavailable as exc:
            outcome.append(exc)

    worker = threading.Thread(target=in_namespace, name=f"dial-{port}", daemon=True)
    worker.start()
    worker.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return SocketPortConnection(result)


def _connect(port: int) -> socket.socket:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=DIAL_TIMEOUT_S)
    except OSError as exc:
        raise Unavailable(f"port {port} in the pod: {exc.strerror or exc}") from exc


class RuncAttachSession:
    """Implements :class:`vmcri.handlers.base.ProcessSession` on a monitor's attach socket.

    One connection per session (:mod:`vmcri.handlers.runc.attach_frames`); closing it
    detaches. The monitor outlives the daemon, so a restarted daemon attaches the same way.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._closed = threading.Event()

    def output(self) -> Iterator[StreamOutput]:
        decoder = af.Decoder()
        while not self._closed.is_set():
            try:
                data = self._sock.recv(READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                return  # the monitor died, or we detached
            try:
                frames = decoder.feed(data)
            except af.FrameError as exc:
                raise HostCommandError(
                    f"attach: the container monitor sent garbage: {exc}"
                ) from exc
            for frame in frames:
                if frame.kind == af.EXIT:
                    return
                if frame.kind in (af.STDOUT, af.STDERR):
                    yield StreamOutput(
                        "stderr" if frame.kind == af.STDERR else "stdout", frame.payload
                    )

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            try:
                self._sock.sendall(frame)
            except OSError as exc:
                raise FailedPrecondition(f"attach: the container is gone ({exc})") from exc

    def write_stdin(self, data: bytes) -> None:
        for piece in af.chunks(data):
            self._send(af.encode(af.STDIN, piece))

    def close_stdin(self) -> None:
        with contextlib.suppress(FailedPrecondition):
            self._send(af.encode(af.STDIN_EOF))

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(FailedPrecondition):
            self._send(af.encode_resize(height, width))

    def wait(self, timeout: float) -> int | None:
        return 0  # an attachment succeeded when the container's output ended, as in kubelet

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def attach(container_dir: Path) -> RuncAttachSession:
    """Connect to the monitor of the container whose state dir is ``container_dir``.

    The socket is reached through ``/proc/self/fd/<dir fd>/``: a full state path can
    be longer than a unix socket address allows. Raises FailedPrecondition when no
    monitor listens (the container exited or its monitor is gone).
    """
    try:
        dir_fd = os.open(container_dir, os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise FailedPrecondition(f"attach: no state for the container ({exc.strerror})") from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(DIAL_TIMEOUT_S)
        sock.connect(f"/proc/self/fd/{dir_fd}/{af.SOCKET_NAME}")
        sock.settimeout(None)
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(
            f"attach: the container's monitor does not answer ({exc.strerror or exc}); "
            "it is not running"
        ) from exc
    finally:
        os.close(dir_fd)
    return RuncAttachSession(sock)
