"""Port forwarding over SPDY (``portforward.k8s.io``).

For each TCP connection it forwards, the client opens two streams with the same
``requestID`` and ``port`` headers: ``streamType: error`` then ``streamType: data``.
The server connects to the port in the pod's network namespace and relays the data
stream both ways (half-closes pass through); a failure is written as text on the error
stream. A pair that does not complete within the creation timeout is reset.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vmcri.errors import VmcriError
from vmcri.streaming.spdy_conn import SpdyConnection, SpdyStream, StreamClosed
from vmcri.supervisor.api import PortConnection

log = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"
MAX_FORWARDS = 32  # concurrent TCP connections per port-forward session
RELAY_CHUNK = 32 * 1024
UPLOAD_GRACE_S = 5.0

Connect = Callable[[int], PortConnection]


@dataclass
class _Pair:
    created: float
    port: str = ""
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    streams: list[SpdyStream] = field(default_factory=list)


def request_id(stream: SpdyStream) -> str:
    """The pair key; old clients without the header pair streams by their ids."""
    rid = stream.header("requestid")
    if rid:
        return rid
    kind = stream.header("streamtype")
    return str(stream.id if kind == "error" else stream.id - 2)


def parse_port(text: str, allowed: tuple[int, ...]) -> int:
    """Raises ValueError with the message for the client."""
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"invalid port {text[:20]!r}: must be 1..65535")
    port = int(text)
    if allowed and port not in allowed:
        raise ValueError(f"port {port} was not requested (requested: {list(allowed)})")
    return port


def serve_portforward(
    conn: SpdyConnection,
    connect: Connect,
    *,
    target: str,
    allowed_ports: tuple[int, ...],
    creation_timeout: float,
) -> None:
    """Serve pairs until the client hangs up or goes away."""
    pending: dict[str, _Pair] = {}
    active = threading.BoundedSemaphore(MAX_FORWARDS)
    while not conn.closed.is_set() and not conn.going_away:
        stream = conn.accept(1.0)
        now = time.monotonic()
        for key, pair in list(pending.items()):
            if now - pair.created > creation_timeout:
                del pending[key]
                for s in pair.streams:
                    s.abort()
        if stream is None:
            continue
        kind = stream.header("streamtype")
        rid = request_id(stream)
        pair = pending.setdefault(rid, _Pair(now))
        pair.streams.append(stream)
        if kind not in ("error", "data") or getattr(pair, kind) is not None:
            stream.abort()
            continue
        setattr(pair, kind, stream)
        pair.port = pair.port or stream.header("port")
        if pair.error is None or pair.data is None:
            continue
        del pending[rid]
        if not active.acquire(blocking=False):
            _fail(pair.error, pair.data, f"too many forwarded connections (limit {MAX_FORWARDS})")
            continue
        threading.Thread(
            target=_forward_released,
            args=(pair.error, pair.data, pair.port, connect, target, allowed_ports, active),
            name=f"portforward-{pair.port}",
            daemon=True,
        ).start()
    conn.linger(2.0)


def _fail(error: SpdyStream, data: SpdyStream, message: str) -> None:
    with contextlib.suppress(StreamClosed):
        error.write(message.encode())
    error.close()
    data.close()


def _forward_released(
    error: SpdyStream,
    data: SpdyStream,
    port_text: str,
    connect: Connect,
    target: str,
    allowed: tuple[int, ...],
    active: threading.BoundedSemaphore,
) -> None:
    try:
        forward(error, data, port_text, connect, target, allowed)
    finally:
        active.release()


def forward(
    error: SpdyStream,
    data: SpdyStream,
    port_text: str,
    connect: Connect,
    target: str,
    allowed: tuple[int, ...],
) -> None:
    """Relay one TCP connection; failures go to the client on the error stream."""
    try:
        port = parse_port(port_text, allowed)
        upstream = connect(port)
    except ValueError as exc:
        _fail(error, data, str(exc))
        return
    except VmcriError as exc:
        _fail(error, data, f"error forwarding port {port_text} to {target}: {exc.message}")
        return
    to_pod = threading.Thread(
        target=_client_to_pod, args=(data, upstream), name="pf-in", daemon=True
    )
    to_pod.start()
    try:
        while chunk := upstream.recv(RELAY_CHUNK):
            data.write(chunk)
    except (ConnectionError, OSError, StreamClosed) as exc:
        log.debug("port-forward %s: %s", port_text, exc)
    finally:
        # The pod side is done: finish both streams now (kubectl waits for the error
        # stream to end before it lets go of the local connection), give an upload in
        # flight a moment, then drop the pod connection.
        data.close()
        error.close()
        to_pod.join(UPLOAD_GRACE_S)
        upstream.close()


def _client_to_pod(data: SpdyStream, upstream: PortConnection) -> None:
    try:
        while chunk := data.read():
            upstream.send(chunk)
        upstream.close_write()
    except (ConnectionError, OSError) as exc:
        log.debug("port-forward upload ended: %s", exc)
        upstream.close()
