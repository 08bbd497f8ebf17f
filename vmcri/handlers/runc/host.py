"""The host side effects of the runc backend, behind one Protocol so unit tests can fake them.

:class:`RealHost` runs commands, mounts with mount(2) and umount2(2) through
libc, and signals processes; :class:`~vmcri.handlers.runc.backend.RuncBackend`
never touches the host another way (except reading files under its own
state directory and the cgroup tree root it is given).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import vmcri
from vmcri.errors import HostCommandError
from vmcri.host import idmap
from vmcri.model import IDMapping

# The backend's Python helpers need only the standard library and vmcri (podinit) or
# also protobuf (the host agent, which is given its import path). They start without
# ``site`` (``-S``: no scan of site-packages and its .pth files, a fifth of their
# start-up) and find vmcri through PYTHONPATH instead, which RealHost sets for every child.
VMCRI_PATH = str(Path(vmcri.__file__).resolve().parent.parent)


def helper_argv(python: str, module: str, *args: str) -> list[str]:
    """The command line of one of vmcri's Python helpers."""
    return [python, "-S", "-m", module, *args]


PEER_EXIT_S = 2.0
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MNT_DETACH = 0x2


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class Helper(Protocol):
    """A running helper process with a line protocol on its stdin and stdout."""

    pid: int

    def readline(self, timeout: float) -> str:
        """The next line without its newline; "" at end of output.

        Raises HostCommandError when nothing comes within ``timeout`` seconds.
        """
        ...

    def send(self, line: str) -> None: ...

    def finish(self, timeout: float) -> int:
        """Close its stdin and wait for it (killing it after ``timeout``); its exit status."""
        ...


class Peer(Protocol):
    """A process started with one end of a socket pair as its stdin; ours is ``channel``."""

    pid: int
    channel: socket.socket

    def stop(self) -> None:
        """Close our end and wait for the process to end (killing it after a moment)."""
        ...


class Host(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input: bytes | None = None,
        capture: bool = True,
    ) -> CommandResult:
        """Run a command to completion; raises HostCommandError if it cannot run or times out.

        ``capture=False`` sends its output to /dev/null: for commands that leave
        a daemon behind, which would otherwise hold our pipes open.
        """
        ...

    def spawn_detached(self, argv: Sequence[str], *, stderr_path: str) -> bytes:
        """Start ``argv`` in its own session and return the first line it writes to stdout.

        The program daemonizes itself (forks, and its first process exits) so that
        it is not our child; it reports readiness, with its pid, on that line.
        Raises HostCommandError if it cannot be started.
        """
        ...

    def run_bounded(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None,
        limit: int,
        on_timeout: Callable[[], None],
    ) -> tuple[CommandResult, bool]:
        """Run, keeping at most ``limit`` bytes of each output; (result, timed_out).

        At the deadline ``on_timeout`` is called (to kill what the command
        started), then the command itself is killed. Raises HostCommandError.
        """
        ...

    def start_helper(self, argv: Sequence[str], *, stderr_path: str) -> Helper:
        """Start a helper the caller talks to in lines; raises HostCommandError."""
        ...

    def start_peer(self, argv: Sequence[str], *, stderr_path: str) -> Peer:
        """Start ``argv`` in a session of its own, its stdin one end of a ``SOCK_SEQPACKET``
        pair, stdout /dev/null; raises HostCommandError."""
        ...

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        """mount(2); raises HostCommandError."""
        ...

    def idmapped_mount(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        """Mount ``source`` at ``target`` ID-mapped through a user namespace.

        Raises FailedPrecondition (file system or kernel cannot), HostCommandError.
        """
        ...

    def set_id_maps(self, pid: int, uids: Sequence[IDMapping], gids: Sequence[IDMapping]) -> None:
        """Write the uid_map and gid_map of ``pid``'s new user namespace; HostCommandError."""
        ...

    def unmount(self, target: str) -> None:
        """Detach ``target``; a path that is not mounted is success."""
        ...

    def kill(self, pid: int, sig: int) -> bool:
        """Signal ``pid``; False if it does not exist."""
        ...

    def cmdline(self, pid: int) -> list[str] | None:
        """The argv of a live process, or None."""
        ...

    def is_pid_ns_init(self, pid: int, ns_file: str) -> bool:
        """Whether ``pid`` lives (a zombie does not) and is PID 1 of the PID namespace pinned
        at ``ns_file``."""
        ...

    def is_mounted(self, path: str) -> bool: ...


class RealHost:
    """The real host: subprocesses and libc."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
        self._env = dict(os.environ if env is None else env)
        inherited = self._env.get("PYTHONPATH")
        self._env["PYTHONPATH"] = VMCRI_PATH + (os.pathsep + inherited if inherited else "")

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input: bytes | None = None,
        capture: bool = True,
    ) -> CommandResult:
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        try:
            proc = subprocess.run(
                list(argv),
                input=input,
                stdout=out,
                stderr=out,
                timeout=timeout,
                env=self._env,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise HostCommandError(f"{argv[0]}: {exc}") from exc
        return CommandResult(proc.returncode, proc.stdout or b"", proc.stderr or b"")

    def spawn_detached(self, argv: Sequence[str], *, stderr_path: str) -> bytes:
        try:
            with open(stderr_path, "ab") as err, open(os.devnull, "rb") as null:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=null,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                    env=self._env,
                )
        except OSError as exc:
            raise HostCommandError(f"{argv[0]}: {exc}") from exc
        assert proc.stdout is not None
        with proc.stdout:
            line = proc.stdout.readline()
        proc.wait()  # the first process of the daemonizing program has exited by now
        return line

    def run_bounded(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None,
        limit: int,
        on_timeout: Callable[[], None],
    ) -> tuple[CommandResult, bool]:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
            )
        except OSError as exc:
            raise HostCommandError(f"{argv[0]}: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        kept = {out_fd: bytearray(), err_fd: bytearray()}
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        with selectors.DefaultSelector() as sel:
            for fd in kept:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if not timed_out:
                        timed_out = True
                        on_timeout()
                        proc.kill()
                        deadline = time.monotonic() + 5  # then only drain briefly
                        continue
                    break
                for key, _ in sel.select(left):
                    fd = int(key.fd)
                    data = os.read(fd, 65536)
                    if not data:
                        sel.unregister(fd)
                        continue
                    buf = kept[fd]
                    buf += data[: max(limit - len(buf), 0)]
        proc.stdout.close()
        proc.stderr.close()
        if timed_out:
            proc.kill()
        returncode = proc.wait()
        return (
            CommandResult(returncode, bytes(kept[out_fd]), bytes(kept[err_fd])),
            timed_out,
        )

    def start_helper(self, argv: Sequence[str], *, stderr_path: str) -> Helper:
        try:
            with open(stderr_path, "ab") as err:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    start_new_session=True,
                    env=self._env,
                )
        except OSError as exc:
            raise HostCommandError(f"{argv[0]}: {exc}") from exc
        return _PipeHelper(proc)

    def start_peer(self, argv: Sequence[str], *, stderr_path: str) -> Peer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with theirs, open(stderr_path, "ab") as err:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=theirs.fileno(),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                    env=self._env,
                )
        except OSError as exc:
            ours.close()
            raise HostCommandError(f"{argv[0]}: {exc}") from exc
        return _SocketPeer(proc, ours)

    def idmapped_mount(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        idmap.idmapped_mount(source, target, userns_path, recursive=recursive)

    def set_id_maps(self, pid: int, uids: Sequence[IDMapping], gids: Sequence[IDMapping]) -> None:
        idmap.write_id_maps(pid, uids, gids)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        rc = self._libc.mount(
            source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise HostCommandError(
                f"mount {fstype} {source} on {target}: {os.strerror(err)}", returncode=err
            )

    def unmount(self, target: str) -> None:
        rc = self._libc.umount2(target.encode(), MNT_DETACH)
        if rc != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise HostCommandError(f"umount {target}: {os.strerror(err)}", returncode=err)

    def kill(self, pid: int, sig: int) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def cmdline(self, pid: int) -> list[str] | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        if not raw:
            return None
        return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]

    def is_pid_ns_init(self, pid: int, ns_file: str) -> bool:
        try:
            ours = os.stat(f"/proc/{pid}/ns/pid")
            pinned = os.stat(ns_file)
            with open(f"/proc/{pid}/status") as f:
                status = {k: v.split() for k, _, v in (line.partition(":") for line in f)}
        except OSError:
            return False
        same = (ours.st_dev, ours.st_ino) == (pinned.st_dev, pinned.st_ino)
        # A zombie no longer lives: its namespace is empty (the kernel killed the rest before
        # it died) and nothing runs in it again, though /proc shows it as before until its
        # parent, which may be a slow init, reaps it.
        alive = status.get("State", ["Z"])[:1] != ["Z"]
        return same and alive and status.get("NSpid", [])[-1:] == ["1"]

    def is_mounted(self, path: str) -> bool:
        real = os.path.realpath(path)
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 4 and _unescape(fields[4]) == real:
                        return True
        except OSError:
            return False
        return False


class _PipeHelper:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.pid = proc.pid
        self._stdin = proc.stdin
        self._stdout = proc.stdout

    def readline(self, timeout: float) -> str:
        with selectors.DefaultSelector() as sel:
            sel.register(self._stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise HostCommandError(f"helper {self.pid} said nothing for {timeout:.0f} s")
        # The helper writes whole lines and flushes, so a readable pipe holds one.
        return self._stdout.readline().decode(errors="replace").rstrip("\n")

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
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._stdout.close()


class _SocketPeer:
    def __init__(self, proc: subprocess.Popen[bytes], channel: socket.socket) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.channel = channel

    def stop(self) -> None:
        self.channel.close()  # a peer that reads it ends by itself: give it a moment
        try:
            self.proc.wait(PEER_EXIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )
