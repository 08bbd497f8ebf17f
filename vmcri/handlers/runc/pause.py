"""PID 1 of a pod's shared PID namespace: keeps the namespace alive and reaps orphans.

A PID namespace whose init has exited cannot get new processes, so a pod that
shares one needs a process to hold it; this is vmcri's pause, started under
``unshare --pid --fork --kill-child`` and ended by killing that unshare.
"""

from __future__ import annotations

import os
import signal
import sys


def _reap(*_: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    """``pause [PID_FILE]``: writes its host pid (via the host's /proc) once running."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    if len(sys.argv) > 1:
        # /proc is still the host's here, so /proc/self names our pid in the host's terms.
        host_pid = os.readlink("/proc/self")
        tmp = sys.argv[1] + ".tmp"
        with open(tmp, "w") as f:
            f.write(host_pid)
        os.replace(tmp, sys.argv[1])
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
