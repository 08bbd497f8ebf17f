"""Port forwarding over WebSocket (kubelet's ``v4.channel.k8s.io`` port-forward protocol).

The ports come in the URL query (``?port=80&port=443`` or ``?port=80,443``); port number
``i`` gets channel ``2i`` for data (both ways) and ``2i+1`` for errors (server to client).
The server opens every connection at once, starts each channel with the port number as
two little-endian bytes, and relays; one connection per port per WebSocket, and the
WebSocket closes once every connection ended. There is no half-close in this protocol.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
from collections.abc import Callable, Sequence

from vmcri.errors import VmcriError
from vmcri.streaming.websocket import WebSocketClosed, WebSocketConnection
from vmcri.supervisor.api import PortConnection

log = logging.getLogger(__name__)

PROTOCOLS = ("v4.channel.k8s.io",)  # a client may also name none: the same, binary
MAX_PORTS = 16
RELAY_CHUNK = 32 * 1024

Connect = Callable[[int], PortConnection]


def parse_ports(values: Sequence[str], allowed: tuple[int, ...]) -> list[int]:
    """The ``port`` query values; raises ValueError with the message for the client."""
    ports: list[int] = []
    for value in values:
        for text in value.split(","):
            if not text.isdigit() or not 0 < int(text) <= 65535:
                raise ValueError(f"unable to parse {text[:20]!r} as a port (1-65535)")
            if allowed and int(text) not in allowed:
                raise ValueError(f"port {text} was not requested (requested: {list(allowed)})")
            ports.append(int(text))
    if not ports:
        raise ValueError('query parameter "port" is required')
    if len(ports) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports per connection")
    return ports


def serve_websocket_portforward(
    ws: WebSocketConnection, connect: Connect, ports: list[int], *, target: str
) -> None:
    """Relay until every port's connection ended or the client hung up; then close."""
    upstreams: dict[int, PortConnection] = {}
    for index, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        with contextlib.suppress(WebSocketClosed):
            ws.send(bytes([2 * index]) + prefix)
            ws.send(bytes([2 * index + 1]) + prefix)
        try:
            upstreams[index] = connect(port)
        except VmcriError as exc:
            message = f"error forwarding port {port} to {target}: {exc.message}"
            with contextlib.suppress(WebSocketClosed):
                ws.send(bytes([2 * index + 1]) + message.encode())
    threading.Thread(
        target=_client_to_pods, args=(ws, upstreams), name="ws-pf-in", daemon=True
    ).start()
    relays = [
        threading.Thread(target=_pod_to_client, args=(ws, i, up), daemon=True)
        for i, up in upstreams.items()
    ]
    for relay in relays:
        relay.start()
    for relay in relays:
        relay.join()
    for upstream in upstreams.values():
        upstream.close()
    ws.close()


def _client_to_pods(ws: WebSocketConnection, upstreams: dict[int, PortConnection]) -> None:
    try:
        while True:
            _, message = ws.receive()
            if len(message) < 2 or message[0] % 2:
                continue  # nothing to relay, or a channel the client may not write
            upstream = upstreams.get(message[0] // 2)
            if upstream is not None:
                upstream.send(message[1:])
    except (WebSocketClosed, ConnectionError, OSError, VmcriError) as exc:
        log.debug("websocket port-forward upload ended: %s", exc)
    for upstream in upstreams.values():
        upstream.close_write()


def _pod_to_client(ws: WebSocketConnection, index: int, upstream: PortConnection) -> None:
    try:
        while chunk := upstream.recv(RELAY_CHUNK):
            ws.send(bytes([2 * index]) + chunk)
    except (WebSocketClosed, ConnectionError, OSError) as exc:
        log.debug("websocket port-forward download ended: %s", exc)
