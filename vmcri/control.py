"""``vmcri stop``: stop the daemon that holds a state directory, leaving its pods running.

The daemon's pid is in its state-dir lock file, and the flock on that file is
the proof it still runs: a pid read from a file nobody locks is stale and may
name an unrelated process now, so it is never signalled. The daemon's SIGTERM
handler stops serving and releases the lock; sandboxes and containers keep
running (``Daemon.stop``), as they do across a restart of the service.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from vmcri.errors import DeadlineExceeded, FailedPrecondition

LOCK_NAME = "vmcri.lock"  # vmcri.daemon.StateLock's file
LOCK_DIR = "lock"  # private to root (0700), so no other user can lock the file


def lock_path(state_dir: Path) -> Path:
    """Where the daemon of ``state_dir`` holds its lock (vmcri.daemon.StateLock)."""
    return state_dir / LOCK_DIR / LOCK_NAME


POLL_S = 0.05


def _lock_is_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we might have taken
    return False


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding ``state_dir``, or None when none does.

    Raises FailedPrecondition when the lock is held but names no pid.
    """
    path = lock_path(state_dir)
    if not _lock_is_held(path):
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise FailedPrecondition(f"{path} is locked but holds no pid ({text!r})")
    return int(text)


def stop_daemon(state_dir: Path, timeout_s: float = 30.0) -> int | None:
    """SIGTERM the daemon and wait until it released the lock; returns its pid.

    None means no daemon held ``state_dir``. Raises DeadlineExceeded when it
    still holds the lock after ``timeout_s``, FailedPrecondition for a bad lock file.
    """
    pid = daemon_pid(state_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid  # exited between the check and the signal
    deadline = time.monotonic() + timeout_s
    # The lock goes first (the daemon stopped serving), then the process exits.
    while _lock_is_held(lock_path(state_dir)) or _running(pid):
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"vmcri (pid {pid}) has not exited after {timeout_s:g} s")
        time.sleep(POLL_S)
    return pid


def _running(pid: int) -> bool:
    """False once ``pid`` has exited, even while its parent has not reaped it yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
