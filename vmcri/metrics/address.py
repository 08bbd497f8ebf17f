"""The ``[metrics] address`` setting: parsed and held to loopback.

The endpoint has no authentication and its labels name handlers and RPCs, so
exposing it beyond the node is an explicit choice (``allow_non_loopback``).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from vmcri.errors import ConfigError


class ListenAddress(NamedTuple):
    host: str
    port: int


def parse_metrics_address(address: str) -> ListenAddress:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"``; raises ConfigError naming the key."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"metrics.address: {address!r} is not host:port")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ConfigError(f"metrics.address: port {port} is not between 1 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ListenAddress(host, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_address(address: str, allow_non_loopback: bool) -> ListenAddress:
    """The parsed address; raises ConfigError for a non-loopback host unless allowed."""
    parsed = parse_metrics_address(address)
    if not allow_non_loopback and not is_loopback(parsed.host):
        raise ConfigError(
            f"metrics.address: {parsed.host!r} is not a loopback address; the endpoint has "
            "no authentication (set metrics.allow_non_loopback = true to expose it anyway)"
        )
    return parsed
