"""PID 1 of a pod's shared PID namespace: keeps the namespace alive and reaps orphans.

A PID namespace whose init has exited cannot get new processes, so a pod that
shares one needs a process to hold it. :mod:`vmcri.handlers.runc.podinit`
forks it as PID 1 of the new namespace and calls :func:`hold` there, without
an exec: in a pod with its own user namespace an exec would drop the
capabilities it needs to become the pod's root, and would need the
interpreter to be readable by that ID. The daemon ends it with SIGKILL.

It handles SIGCHLD only. The kernel drops a signal sent to a PID namespace's init from inside
the namespace unless the init handles it, so with SIGTERM and SIGINT left at their default
(Python's own SIGINT handler undone) no container of the pod, root or not, can end it and
with it the pod's namespace: a shared-PID pod's ``kill -TERM 1`` or ``kill -9 1`` does
nothing. The VM pods' agent runs the same process in the guest (``agent/guest/pod_pid.py``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

PR_SET_NAME = 15


def _reap(*_: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_pod_root() -> None:
    """Run as the pod's root (a host ID from its mapping) rather than the unmapped host root."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _name_process(name: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def hold(pid_file: str, as_pod_root: bool) -> NoReturn:
    """Write our host pid to ``pid_file``, then sleep and reap until killed."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _name_process(b"vmcri-pause")
    # /proc is still the host's here, so /proc/self names our pid in the host's terms.
    host_pid = os.readlink("/proc/self")
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(host_pid)
    os.replace(tmp, pid_file)
    if as_pod_root:
        _become_pod_root()
    while True:
        signal.pause()


if __name__ == "__main__":  # pragma: no cover - a manual aid: python -m ... PID_FILE
    hold(sys.argv[1], False)
