"""PID 1 of a pod's shared PID namespace: keeps the namespace alive and reaps orphans.

A PID namespace whose init has exited cannot get new processes, so a pod that
shares one needs a process to hold it. Whoever has just unshared the namespace
calls :func:`start`, which forks its PID 1 and calls :func:`hold` there, without
an exec: in a pod with its own user namespace an exec would drop the
capabilities it needs to become the pod's root, and would need the
interpreter to be readable by that ID. On a host that is
:mod:`vmcri.handlers.runc.podinit`, which the daemon ends with SIGKILL; in a VM
pod's guest, a fork of the agent (``agent/guest/pod_pid.py``), since starting an
interpreter there costs seconds under emulation. Nothing here imports or loads a
library after the fork (libc is loaded with the module), so a fork of a process
with threads is safe to run it.

It handles SIGCHLD only. The kernel drops a signal sent to a PID namespace's init from inside
the namespace unless the init handles it, so with SIGTERM and SIGINT left at their default
(Python's own SIGINT handler undone) no container of the pod, root or not, can end it and
with it the pod's namespace: a shared-PID pod's ``kill -TERM 1`` or ``kill -9 1`` does
nothing. The VM pods' agent runs the same process in the guest (``agent/guest/pod_pid.py``).

It is no way out of the pod either. A container that shares its PID namespace, given
CAP_SYS_PTRACE, may read ``/proc/1/root`` and open ``/proc/1/ns/*`` of it; were it in the
host's (or the guest's) mount namespace, that would be the host's files, or the guest's
``/proc`` with the agent in it. So it moves into a mount namespace of its own whose root is
an empty read-only tmpfs (the old tree is under it, unreachable: ``setns`` lands on the mount
on top of the namespace's root) and gives up every capability: code a tracer puts into it
can do no more than the tracer. Its pid file, written in between through a directory it
opened before, says the first is done; if it cannot be done, it exits without one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

PR_SET_NAME = 15
NAME = b"vmcri-pause"
ARG_START_FIELD = 48  # of /proc/PID/stat; arg_end follows
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
LAST_CAP = 63
CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


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


_LIBC = ctypes.CDLL(None, use_errno=True)  # libc: the interpreter links it


def _libc() -> ctypes.CDLL:
    return _LIBC


def _name_process(name: bytes) -> None:
    """``name`` as our comm and our command line, so that ``ps`` shows the pause as what it is
    rather than as the command that forked it (the agent's in a VM pod; podinit's, with the
    pod's plan, on a host). The command line is overwritten where the kernel keeps it, the
    initial stack's argument area (/proc/self/stat's arg_start, arg_end), as setproctitle
    does; Python keeps its own copy of argv."""
    _libc().prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # from field 3 (state) on
    start, end = int(fields[ARG_START_FIELD - 3]), int(fields[ARG_START_FIELD - 2])
    size = end - start
    if 0 < size <= 1 << 20:
        ctypes.memmove(start, name[: size - 1].ljust(size, b"\0"), size)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _empty_root() -> None:
    """A mount namespace of our own whose root is an empty read-only tmpfs.

    The tmpfs is mounted on an existing directory (``/proc`` is one everywhere), then moved
    onto ``/`` and chrooted into, as switch_root does: no directory needs creating.
    """
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(libc.mount(b"none", b"/proc", b"tmpfs", flags, b"size=4k,mode=0555"), "mount tmpfs")
    os.chdir("/proc")
    _check(libc.mount(b".", b"/", None, MS_MOVE, None), "mount --move . /")
    os.chroot(".")
    os.chdir("/")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


def _drop_capabilities() -> None:
    """No capability, now or after an exec (bounding set emptied, no new privileges)."""
    libc = _libc()
    for cap in range(LAST_CAP + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last one
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _own_cgroup(directory: str) -> None:
    """Move into the cgroup ``directory`` (a cgroup v2 directory, made if missing) and make
    it the root of a cgroup namespace of our own: what enters ours sees that cgroup only."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with open(os.path.join(directory, "cgroup.procs"), "w") as f:
        f.write("0")  # the writer
    _check(_libc().unshare(CLONE_NEWCGROUP), "unshare(CLONE_NEWCGROUP)")


def start(pid_file: str, as_pod_root: bool, cgroup: str = "") -> int:
    """Fork the pause process, PID 1 of the PID namespace the caller has just unshared;
    returns its pid in the caller's terms. It keeps none of the caller's descriptors (a
    tracer could use them): 0, 1 and 2 are /dev/null, the rest closed. ``cgroup``: see
    :func:`hold`."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        hold(pid_file, as_pod_root, cgroup)
    finally:
        os._exit(127)


def hold(pid_file: str, as_pod_root: bool, cgroup: str = "") -> NoReturn:
    """Hide the file system, write our host pid to ``pid_file``, drop every capability,
    then sleep and reap until killed. Raises OSError (the caller exits).

    ``cgroup``, when given, is a cgroup v2 directory that becomes our cgroup and the root of
    our own cgroup namespace (:func:`_own_cgroup`); without it we keep the caller's
    cgroup namespace, which a container with CAP_SYS_ADMIN and CAP_SYS_PTRACE could enter."""
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _name_process(NAME)
    # /proc is still the host's here, so /proc/self names our pid in the host's terms.
    host_pid = os.readlink("/proc/self")
    directory = os.open(os.path.dirname(pid_file) or ".", os.O_RDONLY | os.O_DIRECTORY)
    if cgroup:
        _own_cgroup(cgroup)
    _empty_root()
    # The pid file last, through the directory opened before: it says we are set up.
    name = os.path.basename(pid_file)
    fd = os.open(name + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=directory)
    os.write(fd, host_pid.encode())
    os.close(fd)
    os.replace(name + ".tmp", name, src_dir_fd=directory, dst_dir_fd=directory)
    os.close(directory)
    if as_pod_root:
        _become_pod_root()
    _drop_capabilities()
    while True:
        signal.pause()


if __name__ == "__main__":  # pragma: no cover - a manual aid: python -m ... PID_FILE
    hold(sys.argv[1], False)
