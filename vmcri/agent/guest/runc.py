"""The runc command line (runc 1.1, or crun, which has the same), always with the agent's
private ``--root``.

runc create hands its own stdio to the container, so its diagnostics go to a ``--log`` file
instead of the container's stderr pipe; errors are read back from that file. The two word
their errors differently, so "does the runtime know this container" is asked with
``state``, never read from a message.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from vmcri.agent import RUNTIME_COMMAND_TIMEOUT_S
from vmcri.agent.guest.processes import Reaper, RunResult, Waiter
from vmcri.agent.guest.runc_errors import image_refusal
from vmcri.errors import HostCommandError, NotFound

COMMAND_TIMEOUT_S = RUNTIME_COMMAND_TIMEOUT_S
CHOOM = "choom"
"""util-linux's, Essential in Debian: on the host and in the guest image."""
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def sealed_copy(binary: str) -> str:
    """A path that executes a sealed in-memory copy of ``binary``, made now.

    runc (and crun) protect themselves from a container overwriting their binary
    (CVE-2019-5736) by copying it into a sealed memfd before they enter a container,
    once per create and exec, unless they already run from one with exactly these seals
    (runc's ``memfd-bind`` uses the same rule). One copy made at the agent's start skips
    that work; in a VM it is made in the template, so every restored pod shares it, and
    the emulator translates the same code pages for every runtime process.

    Raises HostCommandError when the binary cannot be read.
    """
    path = shutil.which(binary)
    if path is None:
        raise HostCommandError(f"{binary}: not found")
    fd = os.memfd_create(os.path.basename(path), os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as src:
            size, sent = os.fstat(src.fileno()).st_size, 0
            while sent < size:  # sendfile may copy less than asked
                copied = os.sendfile(fd, src.fileno(), sent, size - sent)
                if copied == 0:
                    raise OSError(f"{path} shrank while it was copied")
                sent += copied
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except OSError as exc:
        os.close(fd)
        raise HostCommandError(f"cannot copy {path} into a sealed memfd: {exc}") from exc
    # Kept open for the agent's life; the path resolves through the agent's own fd table.
    return f"/proc/{os.getpid()}/fd/{fd}"


class Runc:
    def __init__(self, reaper: Reaper, *, binary: str = "runc", root: Path) -> None:
        self._reaper = reaper
        self._binary = binary
        self.root = root

    def _argv(self, *args: str, log: Path | None = None) -> list[str]:
        argv = [self._binary, "--root", str(self.root)]
        if log is not None:
            argv += ["--log", str(log), "--log-format", "json"]
        return [*argv, *args]

    def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        pid_file: Path,
        log: Path,
        stdin: int,
        stdout: int,
        stderr: int,
        console_socket: Path | None = None,
    ) -> None:
        """``runc create``; the container's stdio are the given fds (or its console socket).

        Raises:
            FailedPrecondition: the image cannot run the process (runc_errors).
            HostCommandError: runc failed otherwise.
        """
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        proc, waiter = self._reaper.spawn(
            self._argv(*args, container_id, log=log),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=str(bundle),
        )
        timed_out = waiter.wait_or_kill(COMMAND_TIMEOUT_S)
        proc.returncode = waiter.exit_code
        if waiter.exit_code != 0:
            errors = read_log_errors(log)
            refusal = None if timed_out else image_refusal(container_id, errors)
            if refusal is not None:
                raise refusal
            how = f"did not finish within {COMMAND_TIMEOUT_S:g} s" if timed_out else "failed"
            raise HostCommandError(
                f"runc create {container_id} {how}: {errors}", returncode=waiter.exit_code
            )

    def start(self, container_id: str) -> None:
        """Raises HostCommandError."""
        self._run("start", container_id).check(f"runc start {container_id}")

    def kill(self, container_id: str, signal: int) -> None:
        """Raises NotFound if runc does not know the container, HostCommandError otherwise."""
        result = self._run("kill", container_id, str(signal))
        if result.exit_code != 0 and self.state(container_id) is None:
            raise NotFound(f"container {container_id} does not exist in runc")
        result.check(f"runc kill {container_id} {signal}")

    def delete(self, container_id: str) -> None:
        """``runc delete -f``; a container runc does not know is already deleted."""
        result = self._run("delete", "--force", container_id)
        if result.exit_code != 0 and self.state(container_id) is not None:
            result.check(f"runc delete {container_id}")

    def state(self, container_id: str) -> dict[str, object] | None:
        """runc's state of the container, None if runc does not know it."""
        result = self._run("state", container_id)
        if result.exit_code != 0:
            return None
        try:
            value = json.loads(result.stdout)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def update(self, container_id: str, resources_json: bytes) -> None:
        """``runc update -r -`` with an OCI linux.resources object. Raises HostCommandError."""
        self._reaper.run(
            self._argv("update", "--resources", "-", container_id),
            input_data=resources_json,
            timeout=COMMAND_TIMEOUT_S,
        ).check(f"runc update {container_id}")

    def exec_argv(
        self,
        container_id: str,
        *,
        process_file: Path,
        pid_file: Path,
        console_socket: Path | None = None,
        cgroup: str = "",
        oom_score_adj: int | None = None,
    ) -> list[str]:
        """The command line of ``runc exec --detach --process FILE``.

        ``process_file`` is the exec's whole OCI process (exec_process.py): its command,
        identity, terminal and console size. The runtime starts the process, writes its
        pid file and exits; the process becomes the agent's child (PID 1 or subreaper)
        and is waited for by that pid. Never in the foreground: crun there adopts the
        process's orphans and waits for all of them, so ``sh -c 'daemon &'`` would hold
        the exec until the daemon ends (runc does not). ``cgroup`` is a sub-cgroup of the
        container's to run the process in (``[controller:]name``, see exec_group.py).

        With ``oom_score_adj`` the runtime runs under ``choom`` with that score, which
        the exec inherits: crun 1.8 does not apply the file's ``oomScoreAdj`` to an exec
        (runc does, to the same value).
        """
        args = ["exec", "--detach", "--pid-file", str(pid_file), "--process", str(process_file)]
        if cgroup:
            args += ["--cgroup", cgroup]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        argv = self._argv(*args, container_id)
        if oom_score_adj is not None:
            argv = [CHOOM, "-n", str(oom_score_adj), "--", *argv]
        return argv

    def run_detached_exec(self, argv: Sequence[str], what: str) -> None:
        """Run an exec command line whose output is not wanted. Raises HostCommandError."""
        self._reaper.run(argv, timeout=COMMAND_TIMEOUT_S).check(what)

    def spawn(self, argv: Sequence[str], **popen: object) -> tuple[subprocess.Popen[bytes], Waiter]:
        return self._reaper.spawn(argv, **popen)

    def run_exec(
        self,
        argv: Sequence[str],
        *,
        pid_file: Path,
        timeout: float | None,
        max_output: int,
        kill: Callable[[], None],
    ) -> RunResult:
        """Run a built exec command line and wait for its process; on timeout ``kill``
        what it started, then the process."""
        return self._reaper.run_started(
            argv,
            pid_file=pid_file,
            timeout=timeout,
            max_output=max_output,
            on_timeout=kill,
            start_timeout=COMMAND_TIMEOUT_S,
        )

    def _run(self, *args: str) -> RunResult:
        return self._reaper.run(self._argv(*args), timeout=COMMAND_TIMEOUT_S)


def read_log_errors(log: Path, limit: int = 2000) -> str:
    """The error messages of a runc JSON log file, or its raw tail."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no runc log)"
    messages = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            messages.append(str(entry.get("msg", "")))
    return "; ".join(messages)[-limit:] or text[-limit:]
