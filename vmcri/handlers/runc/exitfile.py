"""Files a container's monitor shares with the backend, in the container's state directory.

``monitor.json``  {"pid": N}: the monitor, written before it reports ready.
``pid``           the container's init pid (runc's --pid-file).
``exit.json``     {"exit_code", "finished_at", "reason", "message"}: written
                  atomically once, after the container exited and its output
                  was drained; its presence means "exited".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vmcri.handlers.exit_status import ContainerExit
from vmcri.store.atomic import write_atomic

MONITOR_FILE = "monitor.json"
PID_FILE = "pid"
EXIT_FILE = "exit.json"


def write_exit(directory: str, exit: ContainerExit) -> None:
    data = {
        "exit_code": exit.exit_code,
        "finished_at": exit.finished_at,
        "reason": exit.reason,
        "message": exit.message,
    }
    write_atomic(Path(directory) / EXIT_FILE, json.dumps(data).encode(), mode=0o644)


def read_exit(directory: str) -> ContainerExit | None:
    """The recorded exit, or None if there is none (or it is unreadable)."""
    try:
        with open(os.path.join(directory, EXIT_FILE), "rb") as f:
            data = json.loads(f.read(65536))
        return ContainerExit(
            exit_code=int(data["exit_code"]),
            finished_at=int(data["finished_at"]),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_int_file(path: str) -> int:
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
        text = raw.decode().strip()
        if text.startswith("{"):
            return int(json.loads(text)["pid"])
        return int(text)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"
