"""unshare(2) and setns(2), which Python 3.11 does not wrap (``os.unshare`` came in 3.12),
and the one way the daemon works inside another namespace: on a throwaway thread.

``setns`` moves only the calling thread, so work in a pod's network or mount namespace
runs on a short-lived thread that joins it and ends right after: no other thread of the
daemon ever sees another namespace, and the thread's exit is the way back.

Kept free of vmcri imports: the pod helper (:mod:`vmcri.handlers.runc.podinit`)
uses it and should start fast.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces; raises OSError."""
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def setns(fd: int, nstype: int) -> None:
    """Move the calling *thread* into the namespace ``fd`` refers to; raises OSError."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def on_own_thread(work: Callable[[], T], name: str) -> T:
    """Run ``work`` on a new thread and return what it returns, or raise what it raised."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def in_namespace(fd: int, nstype: int, work: Callable[[], T], name: str) -> T:
    """Run ``work`` on a throwaway thread that has joined the namespace ``fd`` refers to.

    The caller opens and closes ``fd``. Raises OSError (setns) and what ``work`` raises.
    """

    def joined() -> T:
        if nstype == CLONE_NEWNS:
            unshare(CLONE_FS)  # setns(CLONE_NEWNS) needs a root and cwd of this thread's own
        setns(fd, nstype)
        return work()

    return on_own_thread(joined, name)
