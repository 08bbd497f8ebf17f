"""The server end of one SPDY/3.1 connection: peer-initiated streams, read and written by threads.

Threads::

    reader (one)    decodes frames, replies SYN_REPLY to each new stream, queues it for
                    accept(), appends DATA to the stream's bounded buffer (blocking when it is
                    full: TCP backpressure on the client), answers PING, notes GOAWAY/RST
    users (many)    accept() streams, read() and write() them; writes are serialised by a lock

Flow control: kubectl and kubelet speak SPDY through moby/spdystream, which neither honours
nor sends WINDOW_UPDATE. So send windows are not enforced (TCP bounds what is in flight);
receive windows are announced back as data is consumed, for peers that do honour them.

Idle timeout: no frame in either direction for ``idle_timeout`` seconds closes the connection.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque

from vmcri.errors import ProtocolError
from vmcri.streaming import spdy_frames as sf

log = logging.getLogger(__name__)

MAX_STREAMS = 64
STREAM_BUFFER = 256 * 1024  # inbound bytes kept per stream before the reader waits
WRITE_CHUNK = 32 * 1024
WINDOW_UPDATE_AT = 32 * 1024
ACCEPT_BACKLOG = 16


class StreamClosed(Exception):
    """Writing to a stream that was reset, finished by us, or whose connection is gone."""


class SpdyStream:
    def __init__(self, conn: SpdyConnection, stream_id: int, headers: sf.Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self._conn = conn
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._consumed = 0
        self.remote_closed = False  # FIN or RST from the peer, or the connection is gone
        self.local_closed = False  # we sent FIN or RST
        self.reset = False

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    # ---- called by the reader --------------------------------------------------------------

    def _deliver(self, data: bytes, fin: bool, alive: threading.Event) -> None:
        with self._cond:
            while self._buffered >= STREAM_BUFFER and not self.remote_closed and alive.is_set():
                self._cond.wait(1.0)
            if data and not self.remote_closed:
                self._chunks.append(data)
                self._buffered += len(data)
            if fin:
                self.remote_closed = True
            self._cond.notify_all()

    def _end(self, reset: bool) -> None:
        with self._cond:
            self.remote_closed = True
            if reset:
                self.reset = self.local_closed = True
            self._cond.notify_all()

    # ---- users -----------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> bytes | None:
        """Next chunk; b"" once the peer finished the stream; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._chunks and not self.remote_closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not self._chunks:
                return b""
            data = self._chunks.popleft()
            self._buffered -= len(data)
            self._consumed += len(data)
            update = self._consumed if self._consumed >= WINDOW_UPDATE_AT else 0
            if update:
                self._consumed = 0
            self._cond.notify_all()
        if update and not self.reset:
            with contextlib.suppress(StreamClosed):
                self._conn.send(sf.WindowUpdate(self.id, update), sf.WindowUpdate(0, update))
        return data

    def write(self, data: bytes) -> None:
        """Raises StreamClosed."""
        view = memoryview(data)
        while view:
            if self.local_closed:
                raise StreamClosed(f"stream {self.id} is closed")
            chunk, view = bytes(view[:WRITE_CHUNK]), view[WRITE_CHUNK:]
            self._conn.send(sf.DataFrame(self.id, chunk))

    def close(self) -> None:
        """Half-close: send FIN once. Never raises."""
        with self._cond:
            if self.local_closed:
                return
            self.local_closed = True
        with contextlib.suppress(StreamClosed):
            self._conn.send(sf.DataFrame(self.id, b"", fin=True))

    def abort(self, status: int = sf.RstStatus.CANCEL) -> None:
        with self._cond:
            if self.reset:
                return
            self.reset = self.local_closed = self.remote_closed = True
            self._cond.notify_all()
        with contextlib.suppress(StreamClosed):
            self._conn.send(sf.RstStream(self.id, status))


class SpdyConnection:
    def __init__(
        self, sock: socket.socket, *, idle_timeout: float, max_streams: int = MAX_STREAMS
    ) -> None:
        self._sock = sock
        self._idle = idle_timeout
        self._max_streams = max_streams
        self._compressor = sf.HeaderCompressor()
        self._send_lock = threading.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._lock = threading.Lock()
        self._last_peer_id = 0
        self._accepted: queue.Queue[SpdyStream | None] = queue.Queue(ACCEPT_BACKLOG)
        self._last_activity = time.monotonic()
        self.alive = threading.Event()
        self.alive.set()
        self.closed = threading.Event()
        self.going_away = False
        self._initial = b""
        self._reader = threading.Thread(target=self._read_loop, name="spdy-reader", daemon=True)

    def start(self, initial: bytes = b"") -> None:
        """Start reading; ``initial`` holds bytes read past the HTTP upgrade request."""
        self._initial = initial
        self._reader.start()

    # ---- sending ---------------------------------------------------------------------------

    def send(self, *frames: sf.Frame) -> None:
        """Raises StreamClosed when the connection is gone or stalls past the idle timeout."""
        if not self.alive.is_set():
            raise StreamClosed("connection closed")
        with self._send_lock:
            try:
                for frame in frames:
                    self._sock.sendall(sf.encode(frame, self._compressor))
            except OSError as exc:
                self._shutdown()
                raise StreamClosed(f"connection lost: {exc}") from exc
            self._last_activity = time.monotonic()

    # ---- accepting streams -----------------------------------------------------------------

    def accept(self, timeout: float | None) -> SpdyStream | None:
        """The next stream the peer opened (already replied to); None on timeout or close."""
        try:
            return self._accepted.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """GOAWAY, then close the socket. Idempotent; never raises."""
        if self.alive.is_set():
            with contextlib.suppress(StreamClosed):
                self.send(sf.GoAway(self._last_peer_id))
        self._shutdown()

    def linger(self, timeout: float) -> None:
        """Let the peer read what we sent and hang up first (bounded), then close."""
        with contextlib.suppress(StreamClosed):
            self.send(sf.GoAway(self._last_peer_id))
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._reader.join(timeout)
        self._shutdown()

    def _shutdown(self) -> None:
        if not self.alive.is_set():
            return
        self.alive.clear()
        self.closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)  # no RST: let the peer read all
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream._end(reset=False)
        with contextlib.suppress(queue.Full):
            self._accepted.put_nowait(None)

    # ---- reading ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        decoder = sf.FrameDecoder()
        decoder.feed(self._initial)
        self._sock.settimeout(min(self._idle, 5.0))
        try:
            while self.alive.is_set():
                while (frame := decoder.next_frame()) is not None:
                    self._handle(frame)
                try:
                    data = self._sock.recv(65536)
                except TimeoutError:
                    if time.monotonic() - self._last_activity > self._idle:
                        log.info("streaming connection idle for %.0fs: closing", self._idle)
                        break
                    continue
                if not data:
                    break
                self._last_activity = time.monotonic()
                decoder.feed(data)
        except ProtocolError as exc:
            log.info("streaming client broke SPDY: %s", exc.message)
            with contextlib.suppress(StreamClosed):
                self.send(sf.GoAway(self._last_peer_id, 1))
        except (OSError, StreamClosed):
            pass  # the peer or the server hung up; every stream learns it below
        finally:
            self._shutdown()

    def _handle(self, frame: sf.Frame) -> None:
        if isinstance(frame, sf.SynStream):
            self._new_stream(frame)
        elif isinstance(frame, sf.DataFrame):
            stream = self._stream(frame.stream_id)
            if stream is None:
                self.send(sf.RstStream(frame.stream_id, sf.RstStatus.INVALID_STREAM))
                return
            stream._deliver(frame.data, frame.fin, self.alive)
        elif isinstance(frame, sf.RstStream):
            stream = self._stream(frame.stream_id)
            if stream is not None:
                stream._end(reset=True)
        elif isinstance(frame, sf.HeadersFrame):
            stream = self._stream(frame.stream_id)
            if stream is not None and frame.fin:
                stream._deliver(b"", True, self.alive)
        elif isinstance(frame, sf.Ping):
            if frame.ping_id % 2 == 1:  # the client's ping: echo it
                self.send(frame)
        elif isinstance(frame, sf.GoAway):
            self.going_away = True
            with contextlib.suppress(queue.Full):
                self._accepted.put_nowait(None)
        elif isinstance(frame, sf.SynReply):
            raise ProtocolError("spdy: SYN_REPLY for a stream the server never opened")
        # SETTINGS and WINDOW_UPDATE need no action (see the module docstring).

    def _stream(self, stream_id: int) -> SpdyStream | None:
        with self._lock:
            return self._streams.get(stream_id)

    def _new_stream(self, frame: sf.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_peer_id:
            raise ProtocolError(f"spdy: client opened stream {sid} out of order")
        self._last_peer_id = sid
        with self._lock:
            self._forget_finished()
            refused = self.going_away or len(self._streams) >= self._max_streams
            if not refused:
                stream = SpdyStream(self, sid, frame.headers)
                self._streams[sid] = stream
        if refused:
            self.send(sf.RstStream(sid, sf.RstStatus.REFUSED_STREAM))
            return
        if frame.unidirectional:
            stream.local_closed = True
        if frame.fin:
            stream.remote_closed = True
        self.send(sf.SynReply(sid))
        try:
            self._accepted.put(stream, timeout=5.0)
        except queue.Full:
            stream.abort(sf.RstStatus.REFUSED_STREAM)

    def _forget_finished(self) -> None:
        done = [k for k, s in self._streams.items() if s.remote_closed and s.local_closed]
        for key in done:
            del self._streams[key]
