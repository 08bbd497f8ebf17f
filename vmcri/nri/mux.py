"""NRI's connection multiplexer (github.com/containerd/nri pkg/net/multiplex), runtime side.

One socket to a plugin carries several logical connections. Each chunk on the socket is
an 8-byte header (4-byte big-endian connection id, 4-byte big-endian length) and that
many bytes of the connection's stream. NRI opens connection 1 for the Plugin service
(the plugin serves, the runtime calls) and 2 for the Runtime service (the runtime
serves, the plugin calls); 0 is reserved. Chunks for a connection nobody opened are
dropped, as NRI does.

Bounds, since a plugin is a client like any other:

- a chunk over one ttrpc frame (10 + 4 MiB) ends the connection before it is read;
- a write that cannot finish within ``write_timeout_s`` (a plugin that stopped reading)
  ends the connection, so the caller holding the write lock waits no longer than that;
- we write chunks of at most 4 KiB: NRI's Go side reads each chunk through a 4 KiB
  bufio.Reader and refuses one that is larger than the buffer it reads into.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from vmcri.nri.ttrpc_frames import HEADER_LEN, MAX_BODY

log = logging.getLogger(__name__)

PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2

CHUNK_HEADER = struct.Struct(">II")
MAX_CHUNK = HEADER_LEN + MAX_BODY
"""NRI's maxPayloadSize: a chunk never holds more than one whole ttrpc frame."""
WRITE_CHUNK = 4096

Receiver = Callable[[bytes], None]


class Mux:
    """The logical connections over one plugin socket.

    ``open`` registers a receiver for a connection (called on the reader thread with
    each chunk, in order); ``start`` starts that thread; ``send`` writes; ``close``
    ends everything once and tells each ``on_close`` callback why.
    """

    def __init__(self, sock: socket.socket, name: str, write_timeout_s: float) -> None:
        self._sock = sock
        self.name = name
        self._sock.settimeout(write_timeout_s)
        self._receivers: dict[int, Receiver] = {}
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self.close_reason = ""
        self.on_close: list[Callable[[str], None]] = []
        self._thread = threading.Thread(target=self._read_loop, name=f"nri-mux-{name}", daemon=True)

    def open(self, conn_id: int, receiver: Receiver) -> None:
        if conn_id == 0:
            raise ValueError("connection id 0 is reserved")
        self._receivers[conn_id] = receiver

    def start(self) -> None:
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, conn_id: int, data: bytes) -> None:
        """Write ``data`` on connection ``conn_id``; raises ConnectionError once closed or
        when the plugin does not take it in time (the connection is then closed)."""
        if self.closed:
            raise ConnectionError(f"plugin {self.name}: connection closed ({self.close_reason})")
        with self._write_lock:
            try:
                for start in range(0, len(data), WRITE_CHUNK):
                    chunk = data[start : start + WRITE_CHUNK]
                    self._sock.sendall(CHUNK_HEADER.pack(conn_id, len(chunk)) + chunk)
            except TimeoutError as exc:
                self.close("it stopped reading (a write timed out)")
                raise ConnectionError(f"plugin {self.name}: it stopped reading") from exc
            except OSError as exc:
                self.close(f"write failed: {exc}")
                raise ConnectionError(f"plugin {self.name}: write failed: {exc}") from exc

    def close(self, reason: str) -> None:
        with self._close_lock:
            if self._closed.is_set():
                return
            self.close_reason = reason
            self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for callback in list(self.on_close):
            try:
                callback(reason)
            except Exception:
                log.exception("plugin %s: close callback failed", self.name)

    def _read_exactly(self, n: int) -> bytes | None:
        """``n`` bytes, or None at end of stream or once closed. An idle plugin is fine:
        a read timeout only means nothing came yet."""
        buf = bytearray()
        while len(buf) < n:
            if self.closed:
                return None
            try:
                got = self._sock.recv(min(n - len(buf), 1 << 16))
            except TimeoutError:
                continue
            except OSError:
                return None
            if not got:
                return None
            buf += got
        return bytes(buf)

    def _read_loop(self) -> None:
        reason = "it closed the connection"
        try:
            while True:
                header = self._read_exactly(CHUNK_HEADER.size)
                if header is None:
                    break
                conn_id, length = CHUNK_HEADER.unpack(header)
                if length > MAX_CHUNK:
                    reason = f"protocol error: a {length}-byte chunk (at most {MAX_CHUNK})"
                    break
                body = self._read_exactly(length)
                if body is None:
                    break
                receiver = self._receivers.get(conn_id)
                if receiver is not None:
                    receiver(body)
        except Exception as exc:  # a receiver refused the stream: end this plugin only
            reason = f"protocol error: {exc}"
        self.close(reason)
