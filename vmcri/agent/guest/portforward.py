"""Port forwarding in the guest: TCP connections to 127.0.0.1 relayed to the host as events.

All containers of a pod share the VM's network namespace, so 127.0.0.1:PORT here is the
pod's port. Host -> pod bytes arrive as PortForwardWrite calls; pod -> host bytes leave as
PortForwardData events, at most ``window`` unacknowledged bytes per stream (the reader
waits for the host's ``consumed``), so a slow client never grows the event log unbounded.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading

from vmcri.agent.guest.events import EventLog
from vmcri.api import agent_pb2
from vmcri.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

WINDOW = 256 * 1024
CHUNK = 32 * 1024
MAX_STREAMS = 64
CONNECT_TIMEOUT_S = 5.0
MAX_WRITE = 1 << 20


class _Stream:
    def __init__(self, stream_id: str, sock: socket.socket) -> None:
        self.stream_id = stream_id
        self.sock = sock
        self.cond = threading.Condition()
        self.unacked = 0
        self.closed = False


class PortForwards:
    def __init__(self, events: EventLog, window: int = WINDOW) -> None:
        self._events = events
        self._window = window
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}

    def open(self, req: agent_pb2.PortForwardOpenRequest) -> agent_pb2.PortForwardOpenResponse:
        """Raises InvalidArgument (port), ResourceExhausted, Unavailable (connect failed)."""
        if not 0 < req.port <= 65535:
            raise InvalidArgument(f"port {req.port} is not a TCP port")
        with self._lock:
            if len(self._streams) >= MAX_STREAMS:
                raise ResourceExhausted(f"too many forwarded connections ({MAX_STREAMS})")
        try:
            sock = socket.create_connection(("127.0.0.1", req.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise Unavailable(f"connect to 127.0.0.1:{req.port}: {exc.strerror or exc}") from exc
        sock.settimeout(None)
        stream = _Stream(f"pf-{next(self._ids)}", sock)
        with self._lock:
            self._streams[stream.stream_id] = stream
        threading.Thread(
            target=self._pump, args=(stream,), name=stream.stream_id, daemon=True
        ).start()
        return agent_pb2.PortForwardOpenResponse(stream_id=stream.stream_id, window=self._window)

    def write(self, req: agent_pb2.PortForwardWriteRequest) -> None:
        """Raises NotFound (unknown or closed stream), InvalidArgument, Unavailable."""
        with self._lock:
            stream = self._streams.get(req.stream_id)
        if stream is None:
            raise NotFound(f"port-forward stream {req.stream_id[:80]!r} not found")
        if len(req.data) > MAX_WRITE:
            raise InvalidArgument(f"port-forward write of {len(req.data)} bytes is too large")
        if req.consumed:
            with stream.cond:
                stream.unacked = max(0, stream.unacked - req.consumed)
                stream.cond.notify_all()
        try:
            if req.data:
                stream.sock.sendall(req.data)
            if req.close_write:
                stream.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise Unavailable(f"port-forward {req.stream_id}: {exc.strerror or exc}") from exc
        finally:
            if req.close:
                self._close(stream)

    def _close(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.pop(stream.stream_id, None)
        with stream.cond:
            stream.closed = True
            stream.cond.notify_all()
        with contextlib.suppress(OSError):
            stream.sock.shutdown(socket.SHUT_RDWR)
        stream.sock.close()

    def _pump(self, stream: _Stream) -> None:
        error = ""
        try:
            while True:
                with stream.cond:
                    while stream.unacked >= self._window and not stream.closed:
                        stream.cond.wait()
                    if stream.closed:
                        return
                data = stream.sock.recv(CHUNK)
                if not data:
                    break
                with stream.cond:
                    stream.unacked += len(data)
                self._emit(stream.stream_id, data, False, "")
        except OSError as exc:
            error = str(exc.strerror or exc)
            with stream.cond:
                if stream.closed:
                    return
        self._emit(stream.stream_id, b"", True, error)

    def _emit(self, stream_id: str, data: bytes, eof: bool, error: str) -> None:
        def fill(event: agent_pb2.Event) -> None:
            event.port_forward_data.stream_id = stream_id
            event.port_forward_data.data = data
            event.port_forward_data.eof = eof
            event.port_forward_data.error = error

        self._events.append(fill)
