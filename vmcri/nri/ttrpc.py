"""ttrpc unary calls over one multiplexed connection: a client and a server.

Only what NRI uses: unary requests and responses (no streams). The client numbers its
requests 1, 3, 5, ... (ttrpc's servers refuse even or reused stream ids) and waits for
each answer at most its timeout; an answer to a call that has given up is dropped. The
server runs each request on a thread of its own, at most ``MAX_IN_FLIGHT`` at once per
connection, so a slow handler never holds the socket's reader.

Anything that does not parse is a protocol error: it ends the plugin's connection (the
mux closes it and names the plugin in the log).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from vmcri.api import ttrpc_pb2
from vmcri.errors import ProtocolError, VmcriError
from vmcri.nri import ttrpc_frames as frames
from vmcri.nri.mux import Mux

MAX_IN_FLIGHT = 4
"""Requests of one plugin handled at once; more are refused with RESOURCE_EXHAUSTED."""

GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
}


class CallTimeout(Exception):
    """The peer did not answer in time."""


class RemoteError(Exception):
    """The peer answered with an error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (status {code})")
        self.code = code
        self.message = message


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: ttrpc_pb2.Response | None = None


class TtrpcClient:
    def __init__(self, mux: Mux, conn_id: int) -> None:
        self._mux = mux
        self._conn = conn_id
        self._reader = frames.FrameReader()
        self._lock = threading.Lock()
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        mux.open(conn_id, self._on_bytes)
        mux.on_close.append(self._on_close)

    def call(self, service: str, method: str, payload: bytes, timeout_s: float) -> bytes:
        """The response payload. Raises CallTimeout, RemoteError, ConnectionError (the
        connection is gone), ProtocolError (the request is over ttrpc's bound)."""
        with self._lock:
            stream_id = self._next_id
            self._next_id += 2
            pending = self._pending[stream_id] = _Pending()
        request = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=int(timeout_s * 1e9)
        )
        try:
            body = frames.encode(
                frames.Frame(stream_id, frames.TYPE_REQUEST, 0, request.SerializeToString())
            )
            self._mux.send(self._conn, body)
            if not pending.done.wait(timeout_s):
                raise CallTimeout(f"{method}: no answer within {timeout_s:g} s")
        finally:
            with self._lock:
                self._pending.pop(stream_id, None)
        response = pending.response
        if response is None:
            raise ConnectionError(f"{method}: connection closed ({self._mux.close_reason})")
        if response.status.code != 0:
            raise RemoteError(response.status.code, response.status.message[:1024])
        return response.payload

    def _on_bytes(self, data: bytes) -> None:
        for frame in self._reader.feed(data):
            if frame.type != frames.TYPE_RESPONSE:
                raise ProtocolError(f"ttrpc: a message of type {frame.type} to a client")
            try:
                response = ttrpc_pb2.Response.FromString(frame.body)
            except DecodeError as exc:
                raise ProtocolError(f"ttrpc: a response that does not parse: {exc}") from exc
            with self._lock:
                pending = self._pending.get(frame.stream_id)
            if pending is not None:
                pending.response = response
                pending.done.set()

    def _on_close(self, reason: str) -> None:
        with self._lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.done.set()


Handler = Callable[[bytes], bytes]
"""A method: the request payload in, the response payload out; raises VmcriError."""


class TtrpcServer:
    def __init__(self, mux: Mux, conn_id: int, service: str, methods: dict[str, Handler]) -> None:
        self._mux = mux
        self._conn = conn_id
        self._service = service
        self._methods = methods
        self._reader = frames.FrameReader()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._last_id = 0
        mux.open(conn_id, self._on_bytes)

    def _on_bytes(self, data: bytes) -> None:
        for frame in self._reader.feed(data):
            if frame.type != frames.TYPE_REQUEST:
                raise ProtocolError(f"ttrpc: a message of type {frame.type} to a server")
            if frame.stream_id % 2 != 1 or frame.stream_id <= self._last_id:
                raise ProtocolError(f"ttrpc: stream id {frame.stream_id} is even or reused")
            self._last_id = frame.stream_id
            try:
                request = ttrpc_pb2.Request.FromString(frame.body)
            except DecodeError as exc:
                raise ProtocolError(f"ttrpc: a request that does not parse: {exc}") from exc
            if not self._slots.acquire(blocking=False):
                self._answer(frame.stream_id, GRPC_CODES["RESOURCE_EXHAUSTED"], "busy", b"")
                continue
            threading.Thread(
                target=self._handle, args=(frame.stream_id, request), daemon=True
            ).start()

    def _handle(self, stream_id: int, request: ttrpc_pb2.Request) -> None:
        try:
            handler = self._methods.get(request.method)
            if request.service != self._service or handler is None:
                self._answer(
                    stream_id,
                    GRPC_CODES["UNIMPLEMENTED"],
                    f"{request.service}/{request.method}: not served here",
                    b"",
                )
                return
            try:
                payload = handler(request.payload)
            except VmcriError as exc:
                self._answer(stream_id, GRPC_CODES.get(exc.code, 13), exc.message, b"")
                return
            except DecodeError as exc:
                self._answer(stream_id, GRPC_CODES["INVALID_ARGUMENT"], str(exc), b"")
                return
            self._answer(stream_id, 0, "", payload)
        except ConnectionError:
            pass  # the mux closed and logged it
        finally:
            self._slots.release()

    def _answer(self, stream_id: int, code: int, message: str, payload: bytes) -> None:
        response = ttrpc_pb2.Response(
            status=ttrpc_pb2.Status(code=code, message=message), payload=payload
        )
        body = frames.encode(
            frames.Frame(stream_id, frames.TYPE_RESPONSE, 0, response.SerializeToString())
        )
        with contextlib.suppress(ConnectionError):
            self._mux.send(self._conn, body)
