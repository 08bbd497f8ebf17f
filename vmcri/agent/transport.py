"""Agent channel transports, chosen by URL scheme on both ends.

=========================  ===============================  =================================
URL                        host (client) does               guest (agent) does
=========================  ===============================  =================================
``unix:///path``           connect to the socket            listen on the socket (tests)
``vsock://CID:PORT``       connect to CID:PORT              listen on PORT (CID ignored/any)
``serial:///dev/vportNpM`` (use the unix socket QEMU owns)  open the virtio-serial port
``serial://name:NAME``                                      find the port named NAME in sysfs
=========================  ===============================  =================================

The virtio-serial port is not a socket: it stays open in the guest while the host side comes
and goes. A read returns EOF (or poll reports POLLHUP) while no host is connected, and a write
would block, so :class:`SerialListener` polls and hands out one :class:`GuestConnection` per
host connection, never closing the device.

This module is imported by the guest agent: standard library and vmcri.errors only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from vmcri.errors import AgentUnavailable, InvalidArgument

VIRTIO_PORTS = Path("/sys/class/virtio-ports")
_READ_CHUNK = 65536
# While no host is connected a serial port polls as hung up at once, so the agent sleeps
# between polls: this long at most before it sees a host. A VM template is saved in this
# loop, and every pod restored from it waits out the rest of that sleep before its first
# answer; 20 ms (not 100) keeps that short, for ~50 cheap polls a second while unconnected.
_HUP_POLL_S = 0.02


class Endpoint(NamedTuple):
    scheme: str
    path: str = ""
    cid: int = 0
    port: int = 0
    port_name: str = ""


def parse_url(url: str) -> Endpoint:
    """Parse an agent URL.

    Raises:
        InvalidArgument: unknown scheme or malformed address.
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "unix":
        path = parts.netloc + parts.path if parts.netloc else parts.path
        if not path.startswith("/"):
            raise InvalidArgument(f"agent url {url!r}: unix:// needs an absolute path")
        return Endpoint("unix", path=path)
    if scheme == "vsock":
        host, _, port = parts.netloc.partition(":")
        try:
            cid = 0xFFFFFFFF if host in ("", "any", "-1") else int(host)
            port_no = int(port)
        except ValueError as exc:
            raise InvalidArgument(f"agent url {url!r}: want vsock://CID:PORT") from exc
        if not (0 <= cid <= 0xFFFFFFFF and 0 < port_no <= 0xFFFFFFFF):
            raise InvalidArgument(f"agent url {url!r}: CID or port out of range")
        return Endpoint("vsock", cid=cid, port=port_no)
    if scheme == "serial":
        if parts.netloc.startswith("name:"):
            name = parts.netloc[len("name:") :]
            if not name or "/" in name:
                raise InvalidArgument(f"agent url {url!r}: bad port name")
            return Endpoint("serial", port_name=name)
        if parts.netloc or not parts.path.startswith("/dev/"):
            raise InvalidArgument(f"agent url {url!r}: want serial:///dev/... or serial://name:N")
        return Endpoint("serial", path=parts.path)
    raise InvalidArgument(f"agent url {url!r}: scheme must be unix, vsock or serial")


# ---- host side -----------------------------------------------------------------------------


def connect(url: str, timeout: float) -> socket.socket:
    """Connect to the agent (or to the QEMU socket in front of it) within ``timeout`` seconds.

    Raises:
        InvalidArgument: the URL is not usable from the host.
        AgentUnavailable: the connection failed or timed out.
    """
    endpoint = parse_url(url)
    if endpoint.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[int, int] = endpoint.path
    elif endpoint.scheme == "vsock":
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        address = (endpoint.cid, endpoint.port)
    else:
        raise InvalidArgument(f"agent url {url!r}: the host connects with unix:// or vsock://")
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise AgentUnavailable(f"cannot connect to agent at {url}: {exc}") from exc
    sock.settimeout(None)
    return sock


# ---- guest side ----------------------------------------------------------------------------


class GuestConnection(Protocol):
    """One host connection as the guest agent sees it."""

    def read(self, timeout: float) -> bytes | None:
        """Bytes from the host; ``b""`` once the host is gone; None on timeout."""

    def write(self, data: bytes) -> None:
        """Write everything or raise ConnectionError (host gone, or stuck past a bound)."""

    def close(self) -> None: ...


class Listener(Protocol):
    def accept(self, timeout: float) -> GuestConnection | None:
        """The next host connection, or None after ``timeout`` seconds."""

    def close(self) -> None: ...


def listen(url: str) -> Listener:
    """Open the guest end of the channel.

    Raises:
        InvalidArgument: bad URL, or no virtio port has the given name.
        OSError: the socket or device cannot be opened.
    """
    endpoint = parse_url(url)
    if endpoint.scheme == "unix":
        return SocketListener.unix(endpoint.path)
    if endpoint.scheme == "vsock":
        return SocketListener.vsock(endpoint.port)
    path = endpoint.path or str(find_virtio_port(endpoint.port_name))
    return SerialListener(path)


def find_virtio_port(name: str, root: Path = VIRTIO_PORTS) -> Path:
    """The /dev node of the virtio-serial port called ``name``.

    Raises:
        InvalidArgument: no port has that name.
    """
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            try:
                port_name = (entry / "name").read_text().strip()
            except OSError:
                continue
            if port_name == name:
                return Path("/dev") / entry.name
    raise InvalidArgument(f"no virtio-serial port named {name!r} under {root}")


class _SocketConnection:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._write_lock = threading.Lock()

    def read(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        try:
            return self._sock.recv(_READ_CHUNK)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise ConnectionError(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class SocketListener:
    def __init__(self, sock: socket.socket, cleanup: str = "") -> None:
        self._sock = sock
        self._cleanup = cleanup

    @classmethod
    def unix(cls, path: str) -> SocketListener:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(4)
        return cls(sock, cleanup=path)

    @classmethod
    def vsock(cls, port: int) -> SocketListener:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.bind((socket.VMADDR_CID_ANY, port))
        sock.listen(4)
        return cls(sock)

    def accept(self, timeout: float) -> GuestConnection | None:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        conn, _ = self._sock.accept()
        return _SocketConnection(conn)

    def close(self) -> None:
        self._sock.close()
        if self._cleanup:
            with contextlib.suppress(OSError):
                os.unlink(self._cleanup)


class _SerialConnection:
    """The port while one host connection lasts; closing it keeps the device open."""

    WRITE_STALL_S = 30.0

    def __init__(self, fd: int, done: threading.Event) -> None:
        self._fd = fd
        self._done = done
        self._write_lock = threading.Lock()

    def read(self, timeout: float) -> bytes | None:
        if self._done.is_set():
            return b""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        events = poller.poll(int(timeout * 1000))
        if not events:
            return None
        revents = events[0][1]
        if revents & select.POLLIN:
            try:
                data = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                return None
            except OSError:
                return b""
            return data
        # POLLHUP (or an error) without data: the host side went away.
        return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self.WRITE_STALL_S
        with self._write_lock:
            while view:
                if self._done.is_set():
                    raise ConnectionError("host connection closed")
                try:
                    written = os.write(self._fd, view)
                    view = view[written:]
                    continue
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise ConnectionError(str(exc)) from exc
                poller = select.poll()
                poller.register(self._fd, select.POLLOUT)
                events = poller.poll(200)
                if events and events[0][1] & select.POLLHUP:
                    raise ConnectionError("host disconnected")
                if time.monotonic() > deadline:
                    raise ConnectionError("host stopped reading")

    def close(self) -> None:
        self._done.set()


class SerialListener:
    """A virtio-serial port: one long-lived fd, one connection per host session."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        self._current: threading.Event | None = None

    def accept(self, timeout: float) -> GuestConnection | None:
        deadline = time.monotonic() + timeout
        while self._current is not None and not self._current.is_set():
            if time.monotonic() >= deadline:
                return None
            # Set when the current connection ends: no polling (an idle guest under
            # emulation pays for every wake-up, and 30 idle pods took a core that way).
            self._current.wait(max(0.0, deadline - time.monotonic()))
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            events = poller.poll(int(min(remaining, 1.0) * 1000))
            if events and events[0][1] & select.POLLIN:
                self._current = threading.Event()
                return _SerialConnection(self._fd, self._current)
            if events:
                # POLLHUP: no host yet; the kernel reports it at once, so sleep between polls.
                time.sleep(min(_HUP_POLL_S, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
