"""The host side of the agent channel: :class:`AgentClient`.

One connection carries every call and event. Threads::

    caller threads   call(): send a Request frame, wait (bounded) for its Response
    reader           cuts frames, completes calls, validates events, sends Acks
    dispatcher       hands events to the backend's callback in order (a slow callback
                     slows the reader, which slows the guest: backpressure, not loss)
    reconnector      after a disconnect, connects again with backoff until close()

Trust: the guest is untrusted. Frames are bounded by framing.MAX_BODY, fields are validated in
vmcri.agent.convert, every call has a timeout, and any protocol breach (garbage, oversize
frame, unknown kind, a response to a call never made) drops the connection with a
ProtocolError, never more. Events are delivered at least once: the guest replays what was not
acknowledged, and the client skips seqs it has already seen while it lives.

Errors::

    AgentUnavailable   cannot connect, or the connection dropped during the call
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError

from vmcri.agent import PROTOCOL_VERSION, convert, transport, types
from vmcri.agent.framing import MAX_BODY, Frame, FrameKind, FrameReader, encode_frame
from vmcri.api import agent_pb2
from vmcri.errors import (
    AgentUnavailable,
    DeadlineExceeded,
    InvalidArgument,
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
EXEC_SYNC_GRACE_S = 10.0
"""Extra wait over an ExecSync's own timeout: runc exec and the channel need a moment too."""


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: agent_pb2.Response | None = None
    error: VmcriError | None = None


class AgentClient:
    def __init__(
        self,
        url: str,
        *,
        on_event: EventCallback | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 30.0,
        reconnect: bool = True,
        connector: Connector = transport.connect,
        max_body: int = MAX_BODY,
    ) -> None:
        self.url = url
        self._on_event = on_event
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._reconnect = reconnect
        self._connector = connector
        self._max_body = max_body
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
        self._events: queue.Queue[types.AgentEvent | None] = queue.Queue(maxsize=1024)
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
                sock.settimeout(None)
                ack = result[0]
                if ack.protocol_version != PROTOCOL_VERSION:
                    raise ProtocolError(
                        f"agent speaks protocol {ack.protocol_version}, not {PROTOCOL_VERSION}"
                    )
                return reader, ack
            if reader.discarded + reader.buffered > MAX_HANDSHAKE_GARBAGE:
                raise ProtocolError(f"agent at {self.url} sent garbage instead of a handshake")

    def close(self) -> None:
        """Disconnect for good; calls in flight fail with AgentUnavailable."""
        with self._lock:
            self._closed = True
        self._disconnect(AgentUnavailable("agent client closed"), self._generation)
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)

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
        delay = 0.1
        try:
            while not self._closed and not self._connected.is_set():
                try:
                    self.connect()
                    log.info("reconnected to the agent at %s", self.url)
                    return
                except VmcriError as exc:
                    self.last_error = exc
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            with self._lock:
                self._reconnecting = False

    # ---- reading ------------------------------------------------------------------------------

    def _read_loop(self, sock: socket.socket, reader: FrameReader, generation: int) -> None:
        error: VmcriError = AgentUnavailable("agent closed the connection")
        try:
            while True:
                while (frame := reader.next_frame()) is not None:
                    self._handle_frame(frame, sock)
                try:
                    data = sock.recv(65536)
                except OSError as exc:
                    error = AgentUnavailable(f"agent connection failed: {exc}")
                    break
                if not data:
                    break
                reader.feed(data)
        except ProtocolError as exc:
            log.warning("agent at %s broke the protocol: %s", self.url, exc)
            error = exc
        self._disconnect(error, generation)

    def _handle_frame(self, frame: Frame, sock: socket.socket) -> None:
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
            self._last_seq = event.seq
            self._events.put(event)
            now = time.monotonic()
            if (
                self._last_seq - self._acked_seq >= ACK_EVERY
                or now - self._last_ack > ACK_INTERVAL_S
            ):
                self._send_ack(sock)
        elif frame.kind == FrameKind.HELLO_ACK:
            return  # a duplicate of the handshake answer: harmless
        else:
            raise ProtocolError(f"agent sent a {frame.kind.name} frame")

    def _send_ack(self, sock: socket.socket) -> None:
        body = agent_pb2.Ack(seq=self._last_seq).SerializeToString()
        try:
            with self._send_lock:
                sock.sendall(encode_frame(FrameKind.ACK, 0, body))
        except OSError:
            return
        self._acked_seq = self._last_seq
        self._last_ack = time.monotonic()

    def _dispatch_loop(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            if self._on_event is None:
                continue
            try:
                self._on_event(event)
            except Exception:
                log.exception("agent event callback failed for %r", type(event).__name__)

    # ---- calls --------------------------------------------------------------------------------

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
        with self._lock:
            sock = self._sock
            if sock is None:
                raise AgentUnavailable(f"agent at {self.url} is not connected")
            request_id = self._next_id
            self._next_id = self._next_id + 1 if self._next_id < 0xFFFFFFFF else 1
            frame = encode_frame(FrameKind.REQUEST, request_id, body, max_body=self._max_body)
            call = _Pending()
            self._pending[request_id] = call
        try:
            with self._send_lock:
                sock.sendall(frame)
        except OSError as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            raise AgentUnavailable(f"agent at {self.url}: send failed: {exc}") from exc
        if not call.done.wait(timeout):
            with self._lock:
                self._pending.pop(request_id, None)
            name = request.WhichOneof("call")
            raise DeadlineExceeded(f"agent call {name} got no answer within {timeout:.1f}s")
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

    # ---- typed calls --------------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> types.AgentInfo:
        """Health check; raises like :meth:`call`."""
        r = self._result(
            self.call(agent_pb2.Request(ping=agent_pb2.PingRequest()), timeout), "ping"
        )
        return self._checked(lambda: convert.agent_info(r.ping))

    def setup_sandbox(
        self,
        *,
        hostname: str = "",
        hosts: bytes = b"",
        resolv_conf: bytes = b"",
        sysctls: dict[str, str] | None = None,
        mounts: Sequence[types.Mount9p] = (),
        interfaces: Sequence[types.GuestInterface] = (),
    ) -> types.SandboxFiles:
        """Raises like :meth:`call` (InvalidArgument names the bad field)."""
        req = agent_pb2.SetupSandboxRequest(
            hostname=hostname,
            hosts=hosts,
            resolv_conf=resolv_conf,
            sysctls=sysctls or {},
            mounts=[
                agent_pb2.Mount9p(tag=m.tag, target=m.target, options=m.options) for m in mounts
            ],
            interfaces=[
                agent_pb2.NetInterface(
                    mac=i.mac,
                    name=i.name,
                    mtu=i.mtu,
                    addresses=i.addresses,
                    routes=[agent_pb2.NetRoute(dst=r.dst, gateway=r.gateway) for r in i.routes],
                )
                for i in interfaces
            ],
        )
        r = self._result(self.call(agent_pb2.Request(setup_sandbox=req)), "setup_sandbox")
        return self._checked(lambda: convert.sandbox_files(r.setup_sandbox))

    def create_container(
        self,
        container_id: str,
        oci_spec: bytes,
        *,
        lowerdirs: Sequence[str] = (),
        rootfs_path: str = "",
        stdin: bool = False,
        stdin_once: bool = False,
        tty: bool = False,
        timeout: float | None = None,
    ) -> types.ContainerState:
        """Raises like :meth:`call`; AlreadyExists if the id is taken in the guest."""
        req = agent_pb2.CreateContainerRequest(
            container_id=container_id,
            oci_spec=oci_spec,
            lowerdirs=list(lowerdirs),
            rootfs_path=rootfs_path,
            stdin=stdin,
            stdin_once=stdin_once,
            tty=tty,
        )
        return self._state(agent_pb2.Request(create_container=req), timeout)

    def start_container(self, container_id: str) -> types.ContainerState:
        req = agent_pb2.StartContainerRequest(container_id=container_id)
        return self._state(agent_pb2.Request(start_container=req))

    def signal_container(self, container_id: str, signal: int) -> None:
        req = agent_pb2.SignalContainerRequest(container_id=container_id, signal=signal)
        self._result(self.call(agent_pb2.Request(signal_container=req)), "empty")

    def wait_container(self, container_id: str, timeout: float) -> types.ContainerState:
        """Block until the container exits; DeadlineExceeded after ``timeout`` seconds."""
        req = agent_pb2.WaitContainerRequest(container_id=container_id)
        return self._state(agent_pb2.Request(wait_container=req), timeout)

    def container_status(self, container_id: str) -> types.ContainerState:
        req = agent_pb2.ContainerStatusRequest(container_id=container_id)
        return self._state(agent_pb2.Request(container_status=req))

    def list_containers(self) -> list[types.ContainerState]:
        req = agent_pb2.Request(list_containers=agent_pb2.ListContainersRequest())
        r = self._result(self.call(req), "list_containers")
        return self._checked(
            lambda: [convert.container_state(c) for c in r.list_containers.containers]
        )

    def remove_container(self, container_id: str, timeout: float | None = None) -> None:
        """Idempotent: removing an unknown container succeeds."""
        req = agent_pb2.RemoveContainerRequest(container_id=container_id)
        self._result(self.call(agent_pb2.Request(remove_container=req), timeout), "empty")

    def exec_sync(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        timeout: float = 0.0,
        max_output_bytes: int = 480 * 1024,
    ) -> types.ExecResult:
        """Run a command to completion. ``timeout`` 0: none in the guest (the call still ends)."""
        if timeout < 0 or max_output_bytes <= 0:
            raise InvalidArgument("exec_sync: timeout must be >= 0 and max_output_bytes > 0")
        req = agent_pb2.ExecSyncRequest(
            container_id=container_id,
            argv=list(argv),
            timeout_ms=int(timeout * 1000),
            max_output_bytes=max_output_bytes,
        )
        wait = (timeout + EXEC_SYNC_GRACE_S) if timeout else None
        r = self._result(self.call(agent_pb2.Request(exec_sync=req), wait), "exec_sync")
        return self._checked(lambda: convert.exec_result(r.exec_sync, max_output_bytes))

    def exec_start(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        rows: int = 0,
        cols: int = 0,
    ) -> str:
        """Start an interactive exec; output and exit arrive as events. Returns its exec id."""
        req = agent_pb2.ExecStartRequest(
            container_id=container_id, argv=list(argv), tty=tty, stdin=stdin, rows=rows, cols=cols
        )
        r = self._result(self.call(agent_pb2.Request(exec_start=req)), "exec_start")
        return self._checked(lambda: convert.container_id(r.exec_start.exec_id, "exec_id"))

    def write_stdin(
        self, container_id: str, data: bytes, *, exec_id: str = "", close: bool = False
    ) -> None:
        """Feed stdin of an exec session, or of the container itself (attach) if no exec_id."""
        req = agent_pb2.WriteStdinRequest(
            container_id=container_id, exec_id=exec_id, data=data, close=close
        )
        self._result(self.call(agent_pb2.Request(write_stdin=req)), "empty")

    def resize(self, container_id: str, rows: int, cols: int, *, exec_id: str = "") -> None:
        req = agent_pb2.ResizeRequest(
            container_id=container_id, exec_id=exec_id, rows=rows, cols=cols
        )
        self._result(self.call(agent_pb2.Request(resize=req)), "empty")

    def stats(self, container_ids: Sequence[str] = ()) -> types.Stats:
        wanted = list(container_ids)
        req = agent_pb2.Request(stats=agent_pb2.StatsRequest(container_ids=wanted))
        r = self._result(self.call(req), "stats")
        return self._checked(lambda: convert.stats(r.stats, wanted))

    def update_resources(self, container_id: str, resources_json: bytes) -> None:
        req = agent_pb2.UpdateResourcesRequest(
            container_id=container_id, resources_json=resources_json
        )
        self._result(self.call(agent_pb2.Request(update_resources=req)), "empty")

    def kill_exec(self, container_id: str, exec_id: str) -> None:
        """SIGKILL an interactive exec session's process; an ended session is success."""
        req = agent_pb2.KillExecRequest(container_id=container_id, exec_id=exec_id)
        self._result(self.call(agent_pb2.Request(kill_exec=req)), "empty")

    def port_forward_open(self, port: int) -> tuple[str, int]:
        """Connect to 127.0.0.1:``port`` in the guest; returns (stream id, window).

        Raises Unavailable when nothing listens there, like :meth:`call` otherwise.
        """
        req = agent_pb2.Request(port_forward_open=agent_pb2.PortForwardOpenRequest(port=port))
        r = self._result(self.call(req), "port_forward_open")
        stream_id = self._checked(
            lambda: convert.container_id(r.port_forward_open.stream_id, "stream_id")
        )
        return stream_id, min(r.port_forward_open.window, 16 << 20)

    def port_forward_write(
        self,
        stream_id: str,
        data: bytes = b"",
        *,
        close_write: bool = False,
        close: bool = False,
        consumed: int = 0,
    ) -> None:
        """Send bytes to a forwarded port, acknowledge received ones, or close; see agent.proto."""
        req = agent_pb2.PortForwardWriteRequest(
            stream_id=stream_id,
            data=data,
            close_write=close_write,
            close=close,
            consumed=consumed,
        )
        self._result(self.call(agent_pb2.Request(port_forward_write=req)), "empty")

    def shutdown(self) -> None:
        """Ask the guest to sync and power off (the answer comes before it does)."""
        req = agent_pb2.Request(shutdown=agent_pb2.ShutdownRequest())
        self._result(self.call(req), "empty")

    def _state(
        self, request: agent_pb2.Request, timeout: float | None = None
    ) -> types.ContainerState:
        r = self._result(self.call(request, timeout), "container")
        return self._checked(lambda: convert.container_state(r.container))
