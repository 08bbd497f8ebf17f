"""Mount namespaces of our own, pinned by a file, and work done inside them by one thread.

A VM pod's volume binds must not live in the host's mount namespace: a bind of a
host path that has a mount below it (a tmpfs in a hostPath) carries a copy of that
mount, set on the node's own directory, and while a copy sits on a directory in the
host's namespace, removing that directory fails with EBUSY. Since Linux 3.18, rmdir
of a directory that is a mount point only in *other* namespaces succeeds and detaches
those mounts there, which is why a runc container's binds (in its own namespace) never
keep a node directory busy. So a VM pod gets a namespace of its own (``create``) that
the host works in (``run_in``).

A namespace is pinned by a bind of its ``nsfs`` file on a file of ours, as
``unshare --mount=FILE`` does: it outlives the thread that made it and a restart of
the daemon, and is released by unmounting that file. Only a thread can change its
mount namespace while the process has others (after ``unshare(CLONE_FS)``), so the
work runs in a short-lived thread of its own: no other thread of the daemon ever sees
another namespace, and that thread's exit is the way back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vmcri.host.namespaces import CLONE_NEWNS, in_namespace, on_own_thread, unshare

T = TypeVar("T")


def create(setup: Callable[[], T]) -> tuple[int, T]:
    """A new mount namespace, a copy of the caller's: an ``nsfs`` file descriptor (the
    caller pins or closes it) and what ``setup``, run inside it, returned.

    Raises OSError (unshare), and whatever ``setup`` raises (the namespace is then gone).
    """

    def work() -> tuple[int, T]:
        unshare(CLONE_NEWNS)  # implies CLONE_FS: this thread alone
        result = setup()
        return os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC), result

    return on_own_thread(work, "mount-ns-create")


def run_in(pin: Path, work: Callable[[], T]) -> T:
    """Run ``work`` in the mount namespace pinned at ``pin``; raises OSError (no such
    namespace there: ``EINVAL`` from setns, or the open's error) and what ``work`` raises.
    """
    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return in_namespace(fd, CLONE_NEWNS, work, "mount-ns-work")
    finally:
        os.close(fd)
