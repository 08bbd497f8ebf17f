"""Port-forward for the runc backend: a TCP connection made inside the pod's network namespace.

The agent of a runc pod lives in the host's network namespace, so the daemon dials the
pod's port itself: a short-lived thread joins the pod namespace (setns changes only the
calling thread), connects to 127.0.0.1, and hands the socket back; a socket keeps the
namespace it was made in.
"""

from __future__ import annotations

import contextlib
import os
import socket

from vmcri.errors import HostCommandError, Unavailable
from vmcri.host.namespaces import CLONE_NEWNET, in_namespace

DIAL_TIMEOUT_S = 10.0


class SocketPortConnection:
    """Implements :class:`vmcri.handlers.base.PortConnection` on a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.settimeout(None)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, max_bytes: int) -> bytes:
        return self._sock.recv(max_bytes)

    def close_write(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def dial(netns_path: str, port: int) -> SocketPortConnection:
    """Connect to 127.0.0.1:``port`` in the network namespace at ``netns_path``.

    An empty path means the host's namespace (a hostNetwork pod). Raises Unavailable
    when nothing accepts the connection, HostCommandError when the namespace cannot
    be joined.
    """
    if not netns_path:
        return SocketPortConnection(_connect(port))
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HostCommandError(f"join the pod network {netns_path}: {exc}") from exc
    try:
        sock = in_namespace(fd, CLONE_NEWNET, lambda: _connect(port), f"dial-{port}")
    except OSError as exc:  # setns; the connect's own failures are Unavailable
        raise HostCommandError(f"join the pod network {netns_path}: {exc}") from exc
    finally:
        os.close(fd)
    return SocketPortConnection(sock)


def _connect(port: int) -> socket.socket:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=DIAL_TIMEOUT_S)
    except OSError as exc:
        raise Unavailable(f"port {port} in the pod: {exc.strerror or exc}") from exc
