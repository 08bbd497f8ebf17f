"""The host end of the agent channel: connection, handshake, events, bounded calls.

One connection carries every call and event. Threads::

    caller threads   call(): send a Request frame, wait (bounded) for its Response
    reader           cuts frames, completes calls, validates events, sends Acks
    dispatcher       hands events to the backend's callback in order (a slow callback
                     slows the reader, which slows the guest: backpressure, not loss)
    reconnector      after a disconnect, connects again with backoff until close()

Trust: the guest is untrusted, and nothing it does may hold a host thread for long:

* frames are bounded by framing.MAX_BODY, fields are validated in vmcri.agent.convert;
* every send has a deadline (``send_timeout``, for the send lock and the bytes): a guest
  that stops reading loses its connection (AgentUnavailable), it does not block the caller;
* every call has a timeout (DeadlineExceeded, with ``stall_hint``'s words: a VM pod's console end);
* events queued for the dispatcher are charged to the pod's :class:`ByteBudget`; a reader
  that finds no room within ``budget.READER_WAIT_S`` drops the connection;
* any protocol breach (garbage, oversize frame, unknown kind, a response to a call never
  made) drops the connection with a ProtocolError, never more.

Events are delivered at least once: the guest replays what was not acknowledged, and the
client skips seqs it has already seen while it lives.

Errors::

    AgentUnavailable   cannot connect, the connection dropped during the call, or a send
                       did not complete within its deadline
    DeadlineExceeded   no response within the call's timeout
    ProtocolError      the agent broke the protocol (connection dropped)
    NotFound, InvalidArgument, ... the agent's own error for the call
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError

from vmcri.agent import PROTOCOL_VERSION, budget, convert, transport, types
from vmcri.agent.budget import ByteBudget
from vmcri.agent.framing import MAX_BODY, Frame, FrameKind, FrameReader, encode_frame
from vmcri.api import agent_pb2
from vmcri.errors import (
    AgentUnavailable,
    DeadlineExceeded,
    ProtocolError,
    VmcriError,
)

log = logging.getLogger("vmcri.agent.client")
T = TypeVar("T")

EventCallback = Callable[[types.AgentEvent], None]
Connector = Callable[[str, float], socket.socket]

MAX_HANDSHAKE_GARBAGE = 4 * MAX_BODY
ACK_EVERY = 64
ACK_INTERVAL_S = 0.25
SEND_TIMEOUT_S = 10.0
"""Longest one frame may wait for the send lock, and then to leave: a healthy guest drains
a maximal frame (1 MiB) in far less, even under TCG."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: agent_pb2.Response | None = None
    error: VmcriError | None = None


class AgentConnection:
    def __init__(
        self,
        url: str,
        *,
        on_event: EventCallback | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 30.0,
        send_timeout: float = SEND_TIMEOUT_S,
        reconnect: bool = True,
        on_reconnect: Callable[[], None] | None = None,
        connector: Connector = transport.connect,
        max_body: int = MAX_BODY,
        event_budget: ByteBudget | None = None,
        stall_hint: Callable[[], str] | None = None,
    ) -> None:
        self.url = url
        self._stall_hint = stall_hint
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._send_timeout = send_timeout
        self._reconnect = reconnect
        self._on_reconnect = on_reconnect
        self._connector = connector
        self._max_body = max_body
        self.budget = event_budget or ByteBudget()
        self._queued = self.budget.share(budget.READER_SHARE)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._connected = threading.Event()
        self._closed = False
        self._sock: socket.socket | None = None
        self._generation = 0
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._last_seq = 0
        self._acked_seq = 0
        self._last_ack = 0.0
        self._reconnecting = False
        self.agent_version = ""
        self.last_error: VmcriError | None = None
        # Unbounded in count: the budget bounds it (every event costs at least its overhead).
        self._events: queue.SimpleQueue[tuple[types.AgentEvent, int] | None] = queue.SimpleQueue()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="agent-events", daemon=True
        )
        self._dispatcher.start()

    # ---- connection -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self) -> None:
        """Connect and handshake within the connect timeout (no-op when connected).

        Raises:
            AgentUnavailable: no connection, or no handshake before the timeout.
            ProtocolError: the agent answered with something that is not the protocol.
        """
        with self._lock:
            if self._closed:
                raise AgentUnavailable("agent client is closed")
            if self._connected.is_set():
                return
            deadline = time.monotonic() + self._connect_timeout
            sock = self._connector(self.url, self._connect_timeout)
            try:
                reader, ack = self._handshake(sock, deadline)
            except BaseException:
                sock.close()
                raise
            if ack.last_seq < self._last_seq:
                log.warning("agent at %s restarted: its event numbers start again", self.url)
                self._last_seq = self._acked_seq = 0
            self.agent_version = convert._printable(ack.agent_version, 64)
            # From here on the socket's timeout is the send deadline (sendall counts it for
            # the whole frame); the reader takes a timeout as "nothing to read yet".
            sock.settimeout(self._send_timeout)
            self._sock = sock
            self._generation += 1
            self._connected.set()
            threading.Thread(
                target=self._read_loop,
                args=(sock, reader, self._generation),
                name="agent-reader",
                daemon=True,
            ).start()

    def _handshake(
        self, sock: socket.socket, deadline: float
    ) -> tuple[FrameReader, agent_pb2.HelloAck]:
        nonce = secrets.randbits(64)
        hello = agent_pb2.Hello(
            nonce=nonce, ack_seq=self._last_seq, protocol_version=PROTOCOL_VERSION
        )
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(encode_frame(FrameKind.HELLO, 0, hello.SerializeToString()))
        except OSError as exc:
            raise AgentUnavailable(f"agent at {self.url}: handshake failed: {exc}") from exc
        reader = FrameReader(max_body=self._max_body)
        result: list[agent_pb2.HelloAck] = []

        def accept(frame: Frame) -> bool:
            try:
                ack = agent_pb2.HelloAck.FromString(frame.body)
            except DecodeError:
                return False
            if ack.nonce != nonce:
                return False
            result.append(ack)
            return True

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentUnavailable(f"agent at {self.url} did not answer the handshake")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise AgentUnavailable(f"agent at {self.url}: handshake failed: {exc}") from exc
            if not data:
                raise AgentUnavailable(f"agent at {self.url} closed the connection")
            reader.feed(data)
            if reader.scan_for(FrameKind.HELLO_ACK, accept) is not None:
                ack = result[0]
                if ack.protocol_version != PROTOCOL_VERSION:
                    raise ProtocolError(
                        f"agent speaks protocol {ack.protocol_version}, not {PROTOCOL_VERSION}"
                    )
                return reader, ack
            if reader.discarded + reader.buffered > MAX_HANDSHAKE_GARBAGE:
                raise ProtocolError(f"agent at {self.url} sent garbage instead of a handshake")

    def close(self, drain_s: float = 0.0) -> None:
        """Disconnect for good; calls in flight fail with AgentUnavailable. ``drain_s`` > 0:
        then wait that long at most for the events already received (and acknowledged, so
        never sent again) to be handed to ``on_event``, unless called from that handler."""
        with self._lock:
            self._closed = True
        self._disconnect(AgentUnavailable("agent client closed"), self._generation)
        self._events.put(None)
        if drain_s > 0 and threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(drain_s)
            if self._dispatcher.is_alive():
                log.warning("agent at %s: events still being handled after close", self.url)

    def _disconnect(self, error: VmcriError, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._sock is None:
                return
            sock, self._sock = self._sock, None
            self._connected.clear()
            pending, self._pending = self._pending, {}
            self.last_error = error
            start_reconnect = self._reconnect and not self._closed and not self._reconnecting
            if start_reconnect:
                self._reconnecting = True
        # shutdown() also wakes a sender blocked in sendall on this socket.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        for call in pending.values():
            call.error = AgentUnavailable(f"agent connection lost: {error.message}")
            call.done.set()
        if start_reconnect:
            threading.Thread(
                target=self._reconnect_loop, name="agent-reconnect", daemon=True
            ).start()

    def _reconnect_loop(self) -> None:
        """Connect until connected, with backoff; the one reconnector while it runs.

        The loop leaves ``_reconnecting`` only under the lock and only while connected,
        in the same step as it looks: a guest that breaks the protocol right after the
        handshake is dropped by the reader either before that look (``_disconnect`` sees
        a reconnector still running, and this loop goes round again) or after it (the
        flag is down, so ``_disconnect`` starts a new one). Clearing the flag after
        ``connect()`` returned, outside that step, left such a pod disconnected for good.
        """
        delay = 0.1
        try:
            while True:
                with self._lock:
                    if self._closed or self._connected.is_set():
                        self._reconnecting = False
                        return
                try:
                    self.connect()
                except VmcriError as exc:
                    self.last_error = exc
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                log.info("reconnected to the agent at %s", self.url)
                if self._on_reconnect is not None:
                    self._on_reconnect()
        except BaseException:
            with self._lock:
                self._reconnecting = False
            raise

    def _send(self, sock: socket.socket, generation: int, data: bytes, what: str) -> None:
        """Send one whole frame within the send deadline, or drop the connection.

        A frame cut short leaves the stream unusable, so any failure disconnects.

        Raises:
            AgentUnavailable: the lock or the bytes did not get through in time, or the
                socket failed.
        """
        if not self._send_lock.acquire(timeout=self._send_timeout):
            # Another sender is stuck: it drops the connection when its own deadline passes.
            raise AgentUnavailable(
                f"agent at {self.url}: {what}: the channel stayed busy for "
                f"{self._send_timeout:g}s (the guest is not reading)"
            )
        try:
            sock.sendall(data)
        except TimeoutError as exc:
            error = AgentUnavailable(
                f"agent at {self.url}: {what}: the guest did not take the frame within "
                f"{self._send_timeout:g}s; connection dropped"
            )
            cause: OSError = exc
        except OSError as exc:
            error = AgentUnavailable(f"agent at {self.url}: {what}: send failed: {exc}")
            cause = exc
        else:
            return
        finally:
            self._send_lock.release()
        log.warning("%s", error.message)
        self._disconnect(error, generation)
        raise error from cause

    # ---- reading ------------------------------------------------------------------------------

    def _read_loop(self, sock: socket.socket, reader: FrameReader, generation: int) -> None:
        error: VmcriError = AgentUnavailable("agent closed the connection")
        try:
            while True:
                while (frame := reader.next_frame()) is not None:
                    self._handle_frame(frame, sock, generation)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue  # the send deadline, not a read one: a quiet guest is fine
                except OSError as exc:
                    error = AgentUnavailable(f"agent connection failed: {exc}")
                    break
                if not data:
                    break
                reader.feed(data)
        except ProtocolError as exc:
            log.warning("agent at %s broke the protocol: %s", self.url, exc)
            error = exc
        except AgentUnavailable as exc:
            error = exc  # an Ack could not be sent; _send has dropped the connection
        self._disconnect(error, generation)

    def _handle_frame(self, frame: Frame, sock: socket.socket, generation: int) -> None:
        if frame.kind == FrameKind.RESPONSE:
            try:
                response = agent_pb2.Response.FromString(frame.body)
            except DecodeError as exc:
                raise ProtocolError(f"undecodable response: {exc}") from exc
            with self._lock:
                call = self._pending.pop(frame.frame_id, None)
                issued = 0 < frame.frame_id < self._next_id
            if call is None:
                if not issued:
                    raise ProtocolError(f"response to request {frame.frame_id} never sent")
                return  # the caller gave up waiting: a late answer
            call.response = response
            call.done.set()
        elif frame.kind == FrameKind.EVENT:
            try:
                message = agent_pb2.Event.FromString(frame.body)
            except DecodeError as exc:
                raise ProtocolError(f"undecodable event: {exc}") from exc
            event = convert.event(message)
            if event.seq <= self._last_seq:
                return  # replayed, already delivered
            cost = budget.event_cost(event)
            if not self._queued.acquire(cost, budget.READER_WAIT_S):
                # Not acknowledged, so the guest sends it again after the reconnect.
                raise ProtocolError(
                    f"no room for its events: the pod's {self.budget.capacity} byte budget "
                    f"stayed spent for {budget.READER_WAIT_S:g}s"
                )
            self._last_seq = event.seq
            self._events.put((event, cost))
            now = time.monotonic()
            if (
                self._last_seq - self._acked_seq >= ACK_EVERY
                or now - self._last_ack > ACK_INTERVAL_S
            ):
                self._send_ack(sock, generation)
        elif frame.kind == FrameKind.HELLO_ACK:
            return  # a duplicate of the handshake answer: harmless
        else:
            raise ProtocolError(f"agent sent a {frame.kind.name} frame")

    def _send_ack(self, sock: socket.socket, generation: int) -> None:
        seq = self._last_seq
        body = agent_pb2.Ack(seq=seq).SerializeToString()
        self._send(sock, generation, encode_frame(FrameKind.ACK, 0, body), "ack")
        self._acked_seq = seq
        self._last_ack = time.monotonic()

    def _dispatch_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            event, cost = item
            try:
                if self._on_event is not None:
                    self._on_event(event)
            except Exception:
                log.exception("agent event callback failed for %r", type(event).__name__)
            finally:
                self._queued.release(cost)

    # ---- calls --------------------------------------------------------------------------------

    def _hint(self) -> str:
        """``stall_hint``'s words on a call left unanswered (a VM pod: its console's end)."""
        if self._stall_hint is None:
            return ""
        try:
            hint = self._stall_hint()
        except Exception:
            log.exception("agent at %s: stall hint failed", self.url)
            return ""
        return f"; {hint}" if hint else ""

    def call(self, request: agent_pb2.Request, timeout: float | None = None) -> agent_pb2.Response:
        """Send one request and wait for its response (connecting first if needed).

        Raises:
            AgentUnavailable, DeadlineExceeded, ProtocolError, InvalidArgument (request too
            large), or the agent's own error for the call.
        """
        timeout = self._call_timeout if timeout is None else timeout
        if not self._connected.is_set():
            if self._reconnecting:
                self._connected.wait(self._connect_timeout)
            if not self._connected.is_set():
                self.connect()
        body = request.SerializeToString()
        name = request.WhichOneof("call")
        with self._lock:
            sock = self._sock
            if sock is None:
                raise AgentUnavailable(f"agent at {self.url} is not connected")
            generation = self._generation
            request_id = self._next_id
            self._next_id = self._next_id + 1 if self._next_id < 0xFFFFFFFF else 1
            frame = encode_frame(FrameKind.REQUEST, request_id, body, max_body=self._max_body)
            call = _Pending()
            self._pending[request_id] = call
        try:
            self._send(sock, generation, frame, f"call {name}")
        except AgentUnavailable:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        if not call.done.wait(timeout):
            with self._lock:
                self._pending.pop(request_id, None)
            raise DeadlineExceeded(
                f"agent call {name} got no answer within {timeout:.1f}s{self._hint()}"
            )
        if call.error is not None:
            raise call.error
        response = call.response
        assert response is not None
        if response.HasField("error"):
            raise convert.error_from(response.error)
        return response

    def _result(self, response: agent_pb2.Response, field_name: str) -> agent_pb2.Response:
        if response.WhichOneof("result") != field_name:
            error = ProtocolError(f"agent answered {response.WhichOneof('result')!r}, "
                                  f"expected {field_name!r}")  # fmt: skip
            self._disconnect(error, self._generation)
            raise error
        return response

    def _checked(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ProtocolError as exc:
            self._disconnect(exc, self._generation)
            raise
