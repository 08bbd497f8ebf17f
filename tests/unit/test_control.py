"""``vmcri stop``: signals only a daemon that really holds the state-dir lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vmcri.control import daemon_pid, lock_path, stop_daemon

# A stand-in daemon: takes the lock the way Daemon does, releases it on SIGTERM.
HOLDER = """
import signal, sys, threading
from pathlib import Path
from vmcri.daemon import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
print("locked", flush=True)
done.wait()
lock.release()
"""


def test_stop_signals_the_lock_holder_and_waits_for_it(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        assert daemon_pid(tmp_path) == child.pid
        assert stop_daemon(tmp_path, timeout_s=10) == child.pid
        assert child.wait(timeout=10) == 0
        assert daemon_pid(tmp_path) is None
    finally:
        child.kill()
        child.wait()


def test_stale_lock_file_naming_a_live_process_is_not_signalled(tmp_path: Path) -> None:
    # The pid of a daemon long gone may now be anyone's: here it is the test itself.
    lock_path(tmp_path).parent.mkdir()
    lock_path(tmp_path).write_text(str(os.getpid()))
    assert stop_daemon(tmp_path, timeout_s=1) is None


def test_no_lock_file_means_no_daemon(tmp_path: Path) -> None:
    assert stop_daemon(tmp_path) is None
