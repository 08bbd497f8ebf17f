"""Pod network namespaces made by the daemon and pinned with a bind mount (like ``ip netns add``).

``<state>/netns/<sandbox id>`` is a bind mount of the namespace, so it lives
on with no process in it: CNI configures it before any container exists, and
DEL can still run after every process of the pod died. A throwaway thread
makes it: ``unshare(CLONE_NEWNET)`` moves only the calling thread, so the
daemon's own network namespace never changes; the thread brings loopback up
(a socket belongs to the namespace of the thread that made it) and the bind
mount of its ``/proc/self/task/<tid>/ns/net`` outlives it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Protocol

from vmcri.errors import HostCommandError
from vmcri.host.namespaces import CLONE_NEWNET, unshare

MS_BIND = 0x1000
MNT_DETACH = 0x2
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then ifr_flags in the union

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class NetnsHost(Protocol):
    """Makes and removes pinned network namespaces; unit tests use a fake."""

    def create(self, path: Path) -> None:
        """A new network namespace with loopback up, pinned at ``path``; raises HostCommandError."""
        ...

    def remove(self, path: Path) -> None:
        """Unpin and delete ``path``; a missing one is success. Raises HostCommandError."""
        ...

    def exists(self, path: Path) -> bool: ...


def loopback_up() -> None:
    """Set ``lo`` up in the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


class PinnedNetns:
    """The real thing."""

    def create(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        # O_EXCL: a leftover file of the same pod is a bug to report, not to reuse.
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o400))
        except FileExistsError as exc:
            raise HostCommandError(f"network namespace {path} exists already") from exc
        failure: list[BaseException] = []

        def make() -> None:
            try:
                unshare(CLONE_NEWNET)
                loopback_up()
                source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
                if _libc.mount(source.encode(), str(path).encode(), None, MS_BIND, None) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"bind mount of the new namespace: {os.strerror(err)}")
            except BaseException as exc:  # reported to the caller's thread
                failure.append(exc)

        # The thread ends inside the new namespace; Python threads are never reused.
        worker = threading.Thread(target=make, name="netns-create", daemon=True)
        worker.start()
        worker.join()
        if failure:
            path.unlink(missing_ok=True)
            raise HostCommandError(f"create network namespace {path}: {failure[0]}") from failure[0]

    def remove(self, path: Path) -> None:
        if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise HostCommandError(f"unmount network namespace {path}: {os.strerror(err)}")
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise HostCommandError(f"remove network namespace {path}: {exc.strerror}") from exc

    def exists(self, path: Path) -> bool:
        return is_netns(path)


def is_netns(path: Path) -> bool:
    """Whether ``path`` is a pinned namespace (a mount point on nsfs), not just a file."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False
