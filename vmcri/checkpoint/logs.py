"""Container logs in a checkpoint: the newest part saved, and continued after a restore.

The CRI log files are vmcri's own (it writes them under kubelet's log directory), read
``O_NOFOLLOW`` and bounded. A restored container's new log file (in kubelet's new log
directory) starts with what the old one held, and the restored process appends to it,
so ``kubectl logs`` goes on where it was.
"""

from __future__ import annotations

import os

MAX_LOG_BYTES = 16 * 1024 * 1024
"""The newest part of a log a checkpoint keeps (kubelet rotates logs at 10 MiB)."""


def log_tail(log_path: str) -> bytes:
    """The newest MAX_LOG_BYTES of the log; b"" when there is none."""
    if not log_path:
        return b""
    try:
        fd = os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - MAX_LOG_BYTES))
        return f.read(MAX_LOG_BYTES)


def continue_log(log_path: str, saved: bytes) -> None:
    """Start the restored container's log with its saved part (before it runs again)."""
    if not log_path or not saved:
        return
    os.makedirs(os.path.dirname(log_path) or "/", exist_ok=True)
    fd = os.open(
        log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
    )
    try:
        view = memoryview(saved)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
