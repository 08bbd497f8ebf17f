"""The streaming HTTP server that Exec, Attach and PortForward URLs point at.

``GET|POST /{exec,attach,portforward}/<token>`` consumes the token the RPC issued and
upgrades the connection to SPDY/3.1 or WebSocket (see the ``command_*`` and
``portforward`` modules). One thread per connection, at most ``max_connections`` of them;
beyond that clients get 503. Trust: the client is whoever reaches the port (loopback by
default); it proves nothing but the token, so tokens are random, single-use and expire,
and everything it sends is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from vmcri.errors import ConfigError, InvalidArgument, ProtocolError, VmcriError
from vmcri.handlers.base import PortConnection, ProcessSession
from vmcri.streaming import command_spdy, command_websocket, portforward, portforward_websocket
from vmcri.streaming.command_spdy import SpdyCommandChannels
from vmcri.streaming.command_websocket import WebSocketCommandChannels
from vmcri.streaming.httpio import HttpRequest, read_request, response
from vmcri.streaming.remotecommand import CommandChannels, Outcome, serve_session
from vmcri.streaming.requests import (
    KIND_OF,
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    StreamRequest,
)
from vmcri.streaming.spdy_conn import SpdyConnection
from vmcri.streaming.tokens import TokenStore
from vmcri.streaming.websocket import WebSocketConnection, accept_key, valid_client_key

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
    max_connections: int = 64  # concurrent streaming connections
    idle_timeout_s: float = 4 * 3600.0  # no traffic for this long ends a session (kubelet's)
    creation_timeout_s: float = 30.0  # for the client to open its streams
    head_timeout_s: float = 10.0  # for the HTTP request head


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
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        self._listener: socket.socket | None = None
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
        listener.listen(64)
        self._port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="streaming-accept", daemon=True).start()
        log.info("streaming server on %s", self.base_url)

    def stop(self) -> None:
        """Stop accepting and end every session (exec'd processes are killed)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
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

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    sock.sendall(response(503, body="too many streaming sessions\n"))
                sock.close()
                continue
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._active.add(sock)
        try:
            self._serve(sock)
        except Exception:
            log.exception("streaming connection failed")
        finally:
            _drain_and_close(sock)
            with self._lock:
                self._active.discard(sock)
            self._slots.release()

    def _serve(self, sock: socket.socket) -> None:
        try:
            req = read_request(sock, self.limits.head_timeout_s)
        except (InvalidArgument, OSError) as exc:
            message = exc.message if isinstance(exc, InvalidArgument) else str(exc)
            with contextlib.suppress(OSError):
                sock.sendall(response(400, body=f"{message}\n"))
            return
        match = ROUTE.match(req.path)
        if match is None:
            sock.sendall(response(404, body="not found\n"))
            return
        if req.method not in ("GET", "POST"):
            sock.sendall(response(405, [("Allow", "GET, POST")], "method not allowed\n"))
            return
        kind, token = match.groups()
        request = self.tokens.consume(token)
        if request is None or KIND_OF[type(request)] != kind:
            sock.sendall(response(404, body="streaming token not found or expired\n"))
            return
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
