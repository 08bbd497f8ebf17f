"""The streaming HTTP server that Exec, Attach and PortForward URLs point at.

``GET|POST /{exec,attach,portforward}/<token>`` consumes the token the RPC issued and
upgrades the connection to SPDY/3.1 or WebSocket (see the ``command_*`` and
``portforward`` modules). Trust: the client is whoever reaches the port (loopback by
default, which host-network pods reach too); it proves nothing but the token, so tokens
are random, single-use and expire, and everything it sends is bounded.

Two separate limits, so that a client without a token can never take what sessions need:
request heads are read by one thread for all connections (``admission``: head deadline,
per-peer share), and only a request with a valid token gets a session thread, at most
``max_sessions`` of them and ``max_sessions_per_pod`` of one pod's (``shares``); beyond
that clients get 503 naming the limit, and keep their token.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.config import STREAMING_MAX_SESSIONS
from vmcri.errors import ConfigError, ProtocolError, VmcriError
from vmcri.http.admission import AdmissionLimits, HeadReader, refuse
from vmcri.http.io import HttpRequest, response
from vmcri.streaming import command_spdy, command_websocket, portforward, portforward_websocket
from vmcri.streaming.command_spdy import SpdyCommandChannels
from vmcri.streaming.command_websocket import WebSocketCommandChannels
from vmcri.streaming.remotecommand import CommandChannels, Outcome, serve_session
from vmcri.streaming.requests import (
    KIND_OF,
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    StreamRequest,
    pod_of,
)
from vmcri.streaming.shares import SessionShares
from vmcri.streaming.spdy_conn import SpdyConnection
from vmcri.streaming.tokens import TokenStore
from vmcri.streaming.websocket import WebSocketConnection, accept_key, valid_client_key
from vmcri.supervisor.api import PortConnection, ProcessSession

log = logging.getLogger(__name__)

ROUTE = re.compile(r"^/(exec|attach|portforward)/([A-Za-z0-9_-]{1,64})$")
DRAIN_S = 2.0


class StreamingRuntime(Protocol):
    """What the server needs of the runtime (``vmcri.streaming.service``)."""

    def exec_session(self, request: ExecRequest) -> ProcessSession: ...

    def attach_session(self, request: AttachRequest) -> ProcessSession: ...

    def port_connect(self, sandbox_id: str, port: int) -> PortConnection: ...


@dataclass(frozen=True)
class ServerLimits:
    token_ttl_s: float = 60.0  # how long an Exec/Attach/PortForward URL stays usable
    max_sessions: int = STREAMING_MAX_SESSIONS  # concurrent sessions (one thread each)
    max_sessions_per_pod: int = 16  # of those, of one pod sandbox (its execs, attaches, forwards)
    idle_timeout_s: float = 4 * 3600.0  # no traffic for this long ends a session (kubelet's)
    creation_timeout_s: float = 30.0  # for the client to open its streams
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)  # before the token


class StreamingServer:
    def __init__(
        self,
        runtime: StreamingRuntime,
        address: str,
        port: int,
        limits: ServerLimits | None = None,
    ) -> None:
        self._runtime = runtime
        self._address = address
        self._port = port
        self.limits = limits or ServerLimits()
        self.tokens: TokenStore[StreamRequest] = TokenStore(self.limits.token_ttl_s)
        self._sessions = SessionShares(self.limits.max_sessions, self.limits.max_sessions_per_pod)
        self._reader: HeadReader | None = None
        self._active: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a thread. Raises ConfigError when the address cannot be bound."""
        try:
            family = (
                socket.AF_INET6
                if ipaddress.ip_address(self._address).version == 6
                else socket.AF_INET
            )
        except ValueError as exc:
            raise ConfigError(f"streaming.address: {self._address!r} is not an IP address") from exc
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self._address, self._port))
        except OSError as exc:
            listener.close()
            raise ConfigError(
                f"streaming: cannot listen on {self._address}:{self._port}: {exc.strerror}"
            ) from exc
        self._port = listener.getsockname()[1]
        self._reader = HeadReader(listener, self.limits.admission, self._admit)
        self._reader.start()
        log.info("streaming server on %s", self.base_url)

    def stop(self) -> None:
        """Stop accepting and end every session (exec'd processes are killed)."""
        self._stopping.set()
        if self._reader is not None:
            self._reader.stop()
        with self._lock:
            active = list(self._active)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self._address}]" if ":" in self._address else self._address
        return f"http://{host}:{self._port}"

    def url_for(self, request: StreamRequest) -> str:
        """A single-use URL for ``request``. Raises ResourceExhausted when too many wait."""
        token = self.tokens.issue(request)
        return f"{self.base_url}/{KIND_OF[type(request)]}/{token}"

    # ---- connections -----------------------------------------------------------------------

    def _admit(self, sock: socket.socket, req: HttpRequest) -> None:
        """Route and token check, on the admission thread: nothing here may block."""
        match = ROUTE.match(req.path)
        if match is None:
            refuse(sock, 404, "not found\n")
            return
        if req.method not in ("GET", "POST"):
            refuse(sock, 405, "method not allowed\n", [("Allow", "GET, POST")])
            return
        kind, token = match.groups()
        # The token names the pod; a slot of its share before the token is used up, so
        # a client turned away keeps its single-use URL.
        request = self.tokens.peek(token)
        if request is None or KIND_OF[type(request)] != kind:
            refuse(sock, 404, "streaming token not found or expired\n")
            return
        pod = pod_of(request)
        refusal = self._sessions.take(pod)
        if refusal is not None:
            refuse(sock, 503, f"{refusal}\n")
            return
        if self.tokens.consume(token) is None:  # another client used it meanwhile
            self._sessions.give_back(pod)
            refuse(sock, 404, "streaming token not found or expired\n")
            return
        thread = threading.Thread(
            target=self._session, args=(sock, req, request), name="streaming", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            self._sessions.give_back(pod)
            refuse(sock, 503, "cannot start a streaming session thread\n")

    def _session(self, sock: socket.socket, req: HttpRequest, request: StreamRequest) -> None:
        with self._lock:
            self._active.add(sock)
        try:
            if not self._stopping.is_set():
                self._upgrade(sock, req, request)
        except Exception:
            log.exception("streaming connection failed")
        finally:
            _drain_and_close(sock)
            with self._lock:
                self._active.discard(sock)
            self._sessions.give_back(pod_of(request))

    def _upgrade(self, sock: socket.socket, req: HttpRequest, request: StreamRequest) -> None:
        if _wants(req, "websocket"):
            self._serve_websocket(sock, req, request)
        elif req.header("upgrade").lower() == "spdy/3.1" and _wants(req, "spdy/3.1"):
            self._serve_spdy(sock, req, request)
        else:
            sock.sendall(
                response(400, body="streaming needs an Upgrade to SPDY/3.1 or websocket\n")
            )

    def _serve_spdy(self, sock: socket.socket, req: HttpRequest, request: StreamRequest) -> None:
        supported = (
            (portforward.PROTOCOL,)
            if isinstance(request, PortForwardRequest)
            else command_spdy.PROTOCOLS
        )
        offered = req.header_tokens("x-stream-protocol-version")
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            body = (
                "unable to upgrade: unable to negotiate protocol: "
                f"client supports {offered}, server accepts {list(supported)}\n"
            )
            headers = [("X-Accepted-Stream-Protocol-Versions", p) for p in supported]
            sock.sendall(response(403, headers, body))
            return
        sock.sendall(
            response(
                101,
                [
                    ("Connection", "Upgrade"),
                    ("Upgrade", "SPDY/3.1"),
                    ("X-Stream-Protocol-Version", chosen),
                ],
            )
        )
        conn = SpdyConnection(sock, idle_timeout=self.limits.idle_timeout_s)
        conn.start(req.rest)
        if isinstance(request, PortForwardRequest):
            sandbox_id = request.sandbox_id
            portforward.serve_portforward(
                conn,
                lambda port: self._runtime.port_connect(sandbox_id, port),
                target=f"pod sandbox {sandbox_id}",
                allowed_ports=request.ports,
                creation_timeout=self.limits.creation_timeout_s,
            )
            return
        roles = command_spdy.expected_roles(
            chosen,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
            tty=request.tty,
        )
        try:
            streams = command_spdy.collect_streams(conn, roles, self.limits.creation_timeout_s)
        except ProtocolError as exc:
            log.info("streaming client: %s", exc.message)
            conn.close()
            return
        self._run_command(
            request, SpdyCommandChannels(conn, streams, chosen, _cmd(request)), f"SPDY {chosen}"
        )

    def _serve_websocket(
        self, sock: socket.socket, req: HttpRequest, request: StreamRequest
    ) -> None:
        key = req.header("sec-websocket-key")
        if req.header("sec-websocket-version") != "13" or not valid_client_key(key):
            sock.sendall(
                response(400, [("Sec-WebSocket-Version", "13")], "bad websocket handshake\n")
            )
            return
        offered = req.header_tokens("sec-websocket-protocol")
        if isinstance(request, PortForwardRequest):
            self._serve_websocket_portforward(sock, req, request, key, offered)
            return
        chosen = next((p for p in offered if p in command_websocket.PROTOCOLS), None)
        if chosen is None:
            supported = list(command_websocket.PROTOCOLS)
            sock.sendall(
                response(
                    400,
                    body=f"unable to upgrade: websocket subprotocols {offered} not supported "
                    f"here (supported: {supported}); use SPDY/3.1\n",
                )
            )
            return
        sock.sendall(
            response(
                101,
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", accept_key(key)),
                    ("Sec-WebSocket-Protocol", chosen),
                ],
            )
        )
        ws = WebSocketConnection(sock, initial=req.rest, idle_timeout=self.limits.idle_timeout_s)
        channels = WebSocketCommandChannels(
            ws, chosen, _cmd(request), stdout=request.stdout, stderr=request.stderr
        )
        self._run_command(request, channels, f"websocket {chosen}")

    def _serve_websocket_portforward(
        self,
        sock: socket.socket,
        req: HttpRequest,
        request: PortForwardRequest,
        key: str,
        offered: list[str],
    ) -> None:
        chosen = next((p for p in offered if p in portforward_websocket.PROTOCOLS), None)
        if offered and chosen is None:
            body = (
                f"unable to upgrade: websocket subprotocols {offered} not supported for "
                f"port-forward (supported: {list(portforward_websocket.PROTOCOLS)}, or SPDY/3.1)\n"
            )
            sock.sendall(response(400, body=body))
            return
        try:
            ports = portforward_websocket.parse_ports(req.query.get("port", []), request.ports)
        except ValueError as exc:
            sock.sendall(response(400, body=f"{exc}\n"))
            return
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
        if chosen:
            headers.append(("Sec-WebSocket-Protocol", chosen))
        sock.sendall(response(101, headers))
        ws = WebSocketConnection(sock, initial=req.rest, idle_timeout=self.limits.idle_timeout_s)
        sandbox_id = request.sandbox_id
        portforward_websocket.serve_websocket_portforward(
            ws,
            lambda port: self._runtime.port_connect(sandbox_id, port),
            ports,
            target=f"pod sandbox {sandbox_id}",
        )

    def _run_command(
        self, request: ExecRequest | AttachRequest, channels: CommandChannels, transport: str
    ) -> None:
        try:
            if isinstance(request, ExecRequest):
                session = self._runtime.exec_session(request)
            else:
                session = self._runtime.attach_session(request)
        except VmcriError as exc:
            log.info("streaming session refused: %s", exc.message)
            channels.finish(Outcome(error=exc.message))
            return
        outcome = serve_session(
            session, channels, stdin=request.stdin, tty=request.tty, cmd=_cmd(request)
        )
        log.info(
            "streaming %s in %s over %s ended: exit %s%s",
            KIND_OF[type(request)],
            request.container_id,
            transport,
            outcome.exit_code,
            f" ({outcome.error})" if outcome.error else "",
        )


def _cmd(request: StreamRequest) -> tuple[str, ...]:
    return request.cmd if isinstance(request, ExecRequest) else ()


def _wants(req: HttpRequest, protocol: str) -> bool:
    connection = [t.lower() for t in req.header_tokens("connection")]
    return "upgrade" in connection and req.header("upgrade").lower() == protocol


def _drain_and_close(sock: socket.socket) -> None:
    """Half-close, read what the client still sends until it hangs up (bounded), close.

    Closing with unread input would make the kernel send RST, and a client that has not
    read our last bytes (the exit status) yet would lose them.
    """
    deadline = time.monotonic() + DRAIN_S
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(65536):
                break
    sock.close()
