"""The monitor's side of attach: the container's stdin and the attached clients.

Runs inside the monitor's single-threaded select loop (:mod:`vmcri.handlers.runc.monitor`)
and never blocks it: every socket and the stdin fd are non-blocking, with a buffer
each. The container's output reaches the CRI log first and the clients second, so a
slow client can only lose its own connection (past ``CLIENT_BACKLOG``), never the log.
Stdin from all clients is merged into one backlog; while it is full the hub stops
reading the clients' sockets, so a container that does not read stdin slows its
writers down instead of growing the monitor.

``stdin_once`` (CRI): the first session that used stdin ending (its stdin EOF or its
hang-up) closes the container's stdin: the pipe's write end, or for a tty a ^D (the
pty master also carries the output and must stay open).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import termios
from dataclasses import dataclass, field

from vmcri.handlers.runc import attach_frames as af

CLIENT_BACKLOG = 8 << 20  # bytes of output queued for one client before it is dropped
STDIN_BACKLOG = 1 << 20
READ_CHUNK = 65536
FINISH_FLUSH_S = 1.0
DEFAULT_TTY_SIZE = (24, 80)  # rows, cols until a client sends its size
TTY_EOF = b"\x04"


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    decoder: af.Decoder = field(default_factory=af.Decoder)
    out: bytearray = field(default_factory=bytearray)
    used_stdin: bool = False


class AttachHub:
    """Owns the attach listener, the clients, and the write side of the container's stdin.

    ``stdin_fd`` is the pipe's write end or a dup of the pty master (or None: the
    container has no stdin); ``tty_fd`` is the pty master for resizes (or None).
    Both become the hub's to close.
    """

    def __init__(
        self,
        sel: selectors.BaseSelector,
        listener: socket.socket,
        stdin_fd: int | None,
        tty_fd: int | None,
        stdin_once: bool,
    ) -> None:
        self._sel = sel
        self._listener = listener
        self._stdin_fd = stdin_fd
        self._tty_fd = tty_fd
        self._stdin_once = stdin_once
        self._stdin = bytearray()
        self._close_stdin_after_flush = False
        self._clients: dict[int, _Client] = {}
        self._interest: dict[int, int] = {}
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, self)
        if stdin_fd is not None:
            os.set_blocking(stdin_fd, False)
        if tty_fd is not None:
            with contextlib.suppress(OSError):
                termios.tcsetwinsize(tty_fd, DEFAULT_TTY_SIZE)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # ---- selector plumbing -----------------------------------------------------------

    def _want(self, fileobj: socket.socket | int, events: int) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        old = self._interest.get(fd, 0)
        if events == old:
            return
        if not events:
            self._sel.unregister(fileobj)
            del self._interest[fd]
        elif not old:
            self._sel.register(fileobj, events, self)
            self._interest[fd] = events
        else:
            self._sel.modify(fileobj, events, self)
            self._interest[fd] = events

    def _update_clients(self) -> None:
        reading = selectors.EVENT_READ if len(self._stdin) < STDIN_BACKLOG else 0
        for client in self._clients.values():
            self._want(client.sock, reading | (selectors.EVENT_WRITE if client.out else 0))

    def _update_stdin(self) -> None:
        if self._stdin_fd is not None:
            self._want(self._stdin_fd, selectors.EVENT_WRITE if self._stdin else 0)

    # ---- events ----------------------------------------------------------------------

    def on_event(self, fileobj: object, mask: int) -> None:
        """Handle one ready fd the hub registered (the selector key's data is the hub)."""
        if fileobj is self._listener:
            self._accept()
        elif isinstance(fileobj, int) and fileobj == self._stdin_fd:
            self._write_stdin()
        elif isinstance(fileobj, socket.socket):
            client = self._clients.get(fileobj.fileno())
            if client is None:
                return
            if mask & selectors.EVENT_WRITE:
                self._flush(client)
            if mask & selectors.EVENT_READ and client.sock.fileno() in self._clients:
                self._read(client)
        self._update_stdin()
        self._update_clients()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        self._clients[sock.fileno()] = _Client(sock)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        try:
            frames = client.decoder.feed(data)
        except af.FrameError:
            self._drop(client)
            return
        for frame in frames:
            if frame.kind == af.STDIN:
                client.used_stdin = True
                self._queue_stdin(frame.payload)
            elif frame.kind == af.STDIN_EOF:
                client.used_stdin = True
                self._session_stdin_ended()
            elif frame.kind == af.RESIZE:
                self._resize(frame.payload)

    def _queue_stdin(self, data: bytes) -> None:
        if self._stdin_fd is not None and not self._close_stdin_after_flush:
            self._stdin += data

    def _session_stdin_ended(self) -> None:
        if not self._stdin_once or self._stdin_fd is None or self._close_stdin_after_flush:
            return
        if self._tty_fd is not None:
            self._stdin += TTY_EOF
        self._close_stdin_after_flush = True
        if not self._stdin:
            self._close_stdin()

    def _resize(self, payload: bytes) -> None:
        if self._tty_fd is None:
            return
        try:
            rows, cols = af.decode_resize(payload)
        except af.FrameError:
            return
        if rows and cols:
            with contextlib.suppress(OSError):
                termios.tcsetwinsize(self._tty_fd, (rows, cols))

    def _write_stdin(self) -> None:
        if self._stdin_fd is None:
            return
        try:
            written = os.write(self._stdin_fd, self._stdin)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EPIPE: the container closed its stdin or exited
            if exc.errno not in (errno.EPIPE, errno.EIO):
                raise
            self._stdin.clear()
            self._close_stdin()
            return
        del self._stdin[:written]
        if not self._stdin and self._close_stdin_after_flush:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._stdin_fd is None:
            return
        self._want(self._stdin_fd, 0)
        with contextlib.suppress(OSError):
            os.close(self._stdin_fd)
        self._stdin_fd = None
        self._stdin.clear()

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        del client.out[:sent]

    def _drop(self, client: _Client) -> None:
        self._want(client.sock, 0)
        self._clients.pop(client.sock.fileno(), None)
        client.sock.close()
        if client.used_stdin:
            self._session_stdin_ended()

    # ---- output ----------------------------------------------------------------------

    def broadcast(self, stream: str, data: bytes) -> None:
        """Queue container output for every client; drop clients that fell too far behind."""
        kind = af.STDERR if stream == "stderr" else af.STDOUT
        frames = b"".join(af.encode(kind, piece) for piece in af.chunks(data))
        for client in list(self._clients.values()):
            if len(client.out) + len(frames) > CLIENT_BACKLOG:
                self._drop(client)
                continue
            client.out += frames
            self._flush(client)
        self._update_stdin()
        self._update_clients()

    def finish(self) -> None:
        """The container's output ended: EXIT to every client (best effort), close all."""
        self._sel.unregister(self._listener)
        self._listener.close()
        for client in list(self._clients.values()):
            client.out += af.encode(af.EXIT)
            self._want(client.sock, 0)
            with contextlib.suppress(OSError):
                client.sock.settimeout(FINISH_FLUSH_S)
                client.sock.sendall(client.out)
            client.sock.close()
        self._clients.clear()
        if self._stdin_fd is not None:
            self._want(self._stdin_fd, 0)
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None
        if self._tty_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._tty_fd)
            self._tty_fd = None
