"""Running one CNI plugin binary as SPEC.md says: config on stdin, parameters in CNI_* env.

A plugin is an executable named by the config's ``type`` and found in the
plugin path (``CNI_PATH``). It prints a result (ADD, VERSION, ...) or an error
object (``{"code", "msg", "details"}``) on stdout. A plugin that outlives its
timeout is killed with its whole process group: plugins run helpers (iptables)
that must not linger holding the xtables lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmcri.errors import DeadlineExceeded, HostCommandError, NotFound

MAX_OUTPUT_BYTES = 4 << 20


@dataclass(frozen=True)
class PluginCall:
    command: str  # ADD, DEL, CHECK, VERSION, GC, STATUS
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""  # CNI_ARGS
    stdin: bytes = b""


class PluginRunner(Protocol):
    """Runs plugin binaries; the real one execs them, unit tests use a fake."""

    def find(self, plugin_type: str) -> Path:
        """The binary for ``plugin_type`` in the plugin path; raises NotFound."""
        ...

    def run(self, plugin_type: str, call: PluginCall) -> bytes:
        """Run it and return stdout on success.

        Raises NotFound (no binary), DeadlineExceeded (timeout), HostCommandError
        (non-zero exit; the message is the plugin's own ``msg`` and ``details``).
        """
        ...


class ExecRunner:
    """The real thing: ``subprocess`` with the CNI environment and a timeout."""

    def __init__(self, bin_dirs: Sequence[str], timeout_s: float) -> None:
        self.bin_dirs = tuple(bin_dirs)
        self.timeout_s = timeout_s

    def find(self, plugin_type: str) -> Path:
        for directory in self.bin_dirs:
            candidate = Path(directory) / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise NotFound(
            f"CNI plugin {plugin_type!r}: not found in {':'.join(self.bin_dirs) or '(no dirs)'}"
        )

    def run(self, plugin_type: str, call: PluginCall) -> bytes:
        binary = self.find(plugin_type)
        env = plugin_env(call, self.bin_dirs)
        proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        try:
            out, err = proc.communicate(call.stdin, timeout=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise DeadlineExceeded(
                f"CNI plugin {plugin_type} {call.command}: no answer after {self.timeout_s:g}s"
            ) from exc
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        if len(out) > MAX_OUTPUT_BYTES:
            raise HostCommandError(f"CNI plugin {plugin_type} {call.command}: output too large")
        if proc.returncode != 0:
            raise HostCommandError(
                f"CNI plugin {plugin_type} {call.command} failed: "
                f"{plugin_error(out, err, proc.returncode)}",
                returncode=proc.returncode,
                stderr=err.decode(errors="replace")[-4096:],
            )
        return out


def plugin_env(call: PluginCall, bin_dirs: Sequence[str]) -> dict[str, str]:
    """The CNI_* variables, plus PATH so plugins find iptables; nothing else of ours leaks."""
    env = {
        "CNI_COMMAND": call.command,
        "CNI_PATH": ":".join(bin_dirs),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    if call.command not in ("VERSION", "GC", "STATUS"):
        env["CNI_CONTAINERID"] = call.container_id
        env["CNI_IFNAME"] = call.ifname
        env["CNI_ARGS"] = call.args
        if call.netns:
            env["CNI_NETNS"] = call.netns
    return env


def plugin_error(stdout: bytes, stderr: bytes, returncode: int) -> str:
    """The plugin's error object as one line, else its stderr, else the exit status."""
    try:
        data = json.loads(stdout)
    except ValueError:
        data = None
    if isinstance(data, dict) and ("msg" in data or "code" in data):
        msg = str(data.get("msg", ""))
        details = str(data.get("details", "") or "")
        text = f"{msg}: {details}" if details and details != msg else msg
        return f"{text} (CNI error code {data.get('code', '?')})"
    tail = stderr.decode(errors="replace").strip() or stdout.decode(errors="replace").strip()
    return tail[-2048:] or f"exit status {returncode}"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def env_args(pairs: Mapping[str, str]) -> str:
    """CNI_ARGS: ``K=V;K=V``. Values are ours (pod metadata): ``;`` and ``=`` are refused."""
    for key, value in pairs.items():
        if any(c in value for c in ";=") or any(c in key for c in ";="):
            raise HostCommandError(f"CNI_ARGS {key}: {value!r} contains ';' or '='")
    return ";".join(f"{k}={v}" for k, v in pairs.items())
