"""Per-container monitor (vmcri's conmon): ``python -m vmcri.handlers.runc.monitor ...``.

It daemonizes (fork, new session), becomes a child subreaper, runs ``runc
create`` with its own pipes as the container's stdio (or, for a tty container,
takes the pty master runc hands over on ``--console-socket``), reports
``{"ok": true, "pid": <monitor pid>}`` (or ``{"ok": false, "error": ...}``) on
one stdout line to the backend, then:

* copies the container's output into the CRI log file (:mod:`vmcri.crilog`)
  (tty output is logged as stdout),
* serves attach clients on ``attach.sock`` in the state dir
  (:mod:`vmcri.handlers.runc.attach_hub`): output to each, their stdin to the
  container, resizes to the pty; clients come and go, the log does not care,
* reopens the log file on SIGHUP (ReopenContainerLog),
* reaps the container's init (reparented to it as subreaper), checks the
  cgroup's OOM-kill counter, drains the pipes (bounded), and writes
  ``exit.json`` atomically (:mod:`vmcri.handlers.runc.exitfile`).

It shares nothing with the daemon but files, so it keeps running, and keeps
the container's output flowing, while the daemon restarts or is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from vmcri.crilog import CriLogWriter
from vmcri.handlers.exit_status import ContainerExit
from vmcri.handlers.runc import attach_frames as af
from vmcri.handlers.runc.attach_hub import AttachHub
from vmcri.handlers.runc.cgroups import oom_kills_in
from vmcri.handlers.runc.exitfile import MONITOR_FILE, PID_FILE, exit_reason, write_exit
from vmcri.store.atomic import write_atomic

PR_SET_CHILD_SUBREAPER = 36
DRAIN_AFTER_EXIT_S = 2.0  # a grandchild holding the pipes open must not hold the exit back
READ_CHUNK = 65536
CONSOLE_WAIT_POLL_S = 0.05


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vmcri-runc-monitor")
    p.add_argument("--runc", required=True)
    p.add_argument("--runc-root", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--dir", required=True, help="the container's state dir (bundle)")
    p.add_argument("--log", default="", help="CRI log file; empty discards output")
    p.add_argument("--oom-file", default="", help="memory.oom_control or memory.events")
    p.add_argument("--tty", action="store_true", help="config.json has terminal: true")
    p.add_argument("--stdin", action="store_true", help="keep the container's stdin open")
    p.add_argument("--stdin-once", action="store_true", help="close stdin after one session")
    return p.parse_args(argv)


def _report(message: dict[str, object]) -> None:
    """The one line the backend waits for; then stdout goes to /dev/null."""
    os.write(1, (json.dumps(message) + "\n").encode())
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def _status_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


class Monitor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.writer: CriLogWriter | None = None
        self.container_pid = 0
        self.exit_status: int | None = None
        self.reopen_requested = False
        self.stdin_fd: int | None = None  # write end of the container's stdin pipe
        self.master_fd: int | None = None  # the pty master, for a tty container
        self.listener: socket.socket | None = None  # attach.sock

    def create(self) -> dict[int, str]:
        """runc create with our pipes; returns the fds to read output from, with their stream.

        The monitor's cwd is the state dir: the console socket is bound by a relative
        name, as a full state path can exceed the 108 bytes of a unix socket address.
        Raises RuntimeError, OSError.
        """
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r = os.open(os.devnull, os.O_RDONLY)
        if self.args.stdin and not self.args.tty:
            os.close(in_r)
            in_r, self.stdin_fd = os.pipe()
        runc_log = os.path.join(self.args.dir, "runc-create.log")
        argv = [
            self.args.runc, "--root", self.args.runc_root, "--log", runc_log,
            "--log-format", "json", "create", "--bundle", self.args.dir,
            "--pid-file", os.path.join(self.args.dir, PID_FILE),
        ]  # fmt: skip
        console: socket.socket | None = None
        if self.args.tty:
            console = _listen(af.CONSOLE_SOCKET_NAME)
            argv += ["--console-socket", af.CONSOLE_SOCKET_NAME]
        argv.append(self.args.id)
        try:
            proc = subprocess.Popen(argv, stdin=in_r, stdout=out_w, stderr=err_w, cwd=self.args.dir)
            if console is not None:
                self.master_fd = _receive_master(console, proc)
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
            if console is not None:
                console.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(af.CONSOLE_SOCKET_NAME)
        # runc create only writes its own errors here; the container cannot run before start.
        rc = proc.wait()
        if rc != 0 or (self.args.tty and self.master_fd is None):
            os.set_blocking(err_r, False)
            try:
                text = os.read(err_r, READ_CHUNK).decode(errors="replace").strip()
            except BlockingIOError:
                text = ""
            raise RuntimeError(text or f"runc create exited with {rc} (tty: {self.args.tty})")
        with open(os.path.join(self.args.dir, PID_FILE)) as f:
            self.container_pid = int(f.read().strip())
        self.listener = _listen(af.SOCKET_NAME)
        outputs = {out_r: "stdout", err_r: "stderr"}
        if self.master_fd is not None:
            outputs[self.master_fd] = "stdout"
        return outputs

    def _attach_hub(self, sel: selectors.BaseSelector) -> AttachHub:
        """The attach endpoint around the listener create() bound (before the report)."""
        assert self.listener is not None
        stdin_fd = self.stdin_fd
        tty_fd = None
        if self.master_fd is not None:
            tty_fd = os.dup(self.master_fd)
            if self.args.stdin:
                stdin_fd = os.dup(self.master_fd)
        self.stdin_fd = None
        return AttachHub(sel, self.listener, stdin_fd, tty_fd, self.args.stdin_once)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.container_pid:
                self.exit_status = status

    def run(self, streams: dict[int, str]) -> ContainerExit:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGHUP, self._on_hup)
        sel = selectors.DefaultSelector()
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        hub = self._attach_hub(sel)
        self._reap()  # the container may have gone before the handler was set
        deadline: float | None = None
        while streams:
            if self.exit_status is not None and deadline is None:
                deadline = time.monotonic() + DRAIN_AFTER_EXIT_S
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            if deadline is not None and timeout == 0:
                break
            for key, mask in sel.select(timeout):
                if key.data is hub:
                    hub.on_event(key.fileobj, mask)
                    continue
                fd = int(key.fd)
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    self._reap()
                    if self.reopen_requested:
                        self.reopen_requested = False
                        self._reopen()
                    continue
                if fd not in streams:
                    continue
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    data = b""  # EIO from a pty master: the container closed its side
                if not data:
                    sel.unregister(fd)
                    os.close(fd)
                    if self.writer is not None:
                        self.writer.flush(streams[fd])
                    del streams[fd]
                    continue
                self._log(streams[fd], data)
                hub.broadcast(streams[fd], data)
        hub.finish()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(af.SOCKET_NAME)
        while self.exit_status is None:
            try:
                pid, status = os.waitpid(self.container_pid, 0)
            except ChildProcessError:
                status = 255 << 8  # not our child after all; nothing more to learn
                pid = self.container_pid
            if pid == self.container_pid:
                self.exit_status = status
        code = _status_code(self.exit_status)
        oom = bool(self.args.oom_file) and oom_kills_in(self.args.oom_file) > 0
        return ContainerExit(
            exit_code=code, finished_at=time.time_ns(), reason=exit_reason(code, oom)
        )

    def _on_hup(self, *_: object) -> None:
        self.reopen_requested = True

    def _reopen(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.reopen()
        except OSError as exc:
            print(f"monitor {self.args.id}: reopen log: {exc}", file=sys.stderr)

    def _log(self, stream: str, data: bytes) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(stream, data)
        except OSError as exc:  # a full disk must not kill the container's output pipe
            print(f"monitor {self.args.id}: log write: {exc}", file=sys.stderr)


def _listen(name: str) -> socket.socket:
    """A fresh unix listener at ``name`` (relative to the cwd), root-only. Raises OSError."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    os.chmod(name, 0o600)
    listener.listen(16)
    return listener


def _receive_master(console: socket.socket, proc: subprocess.Popen[bytes]) -> int | None:
    """The pty master runc sends over the console socket; None if runc exits without.

    runc connects while ``create`` runs, so wait for either the connection or runc's end.
    """
    while True:
        ready, _, _ = select.select([console], [], [], CONSOLE_WAIT_POLL_S)
        if ready:
            conn, _ = console.accept()
            with conn:
                conn.settimeout(10.0)
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            return fds[0] if fds else None
        if proc.poll() is not None:
            return None


def _daemonize() -> None:
    """Fork so the backend's child exits at once; the grandchild is nobody's child."""
    if os.fork() > 0:
        os._exit(0)
    with contextlib.suppress(OSError):  # already a session of its own
        os.setsid()


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    for name in ("dir", "runc_root", "log", "oom_file"):  # the monitor changes its cwd
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    _daemonize()
    libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    monitor = Monitor(args)
    try:
        os.chdir(args.dir)  # socket names are relative to it (see Monitor.create)
        write_atomic(
            Path(args.dir) / MONITOR_FILE, json.dumps({"pid": os.getpid()}).encode(), 0o644
        )
        if args.log:
            monitor.writer = CriLogWriter(args.log)
        streams = monitor.create()
    except (OSError, RuntimeError, ValueError) as exc:
        _report({"ok": False, "error": str(exc)})
        return 1
    _report({"ok": True, "pid": os.getpid(), "container_pid": monitor.container_pid})
    exit = monitor.run(streams)
    if monitor.writer is not None:
        try:
            monitor.writer.close()
        except OSError as exc:
            print(f"monitor {args.id}: close log: {exc}", file=sys.stderr)
    write_exit(args.dir, exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
