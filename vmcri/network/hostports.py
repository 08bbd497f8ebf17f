"""Refusing a hostPort that is already taken, before portmap silently shadows it.

The portmap plugin only adds DNAT rules: a second pod with the same hostPort,
or a host service on it, would be shadowed without an error. kubelet's old
hostport manager opened each port to claim it; vmcri checks instead, against
its other pods' mappings and by binding the port on the host for a moment.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from vmcri.errors import AlreadyExists
from vmcri.model import PodConfig, PortMapping, Protocol

_SOCK_TYPES = {Protocol.TCP: socket.SOCK_STREAM, Protocol.UDP: socket.SOCK_DGRAM}


def _key(port: PortMapping) -> tuple[str, int]:
    return (port.protocol.name.lower(), port.host_port)


def _overlaps(a: PortMapping, b: PortMapping) -> bool:
    same = _key(a) == _key(b)
    return same and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip)


def check_host_ports(pod: PodConfig, others: Iterable[PodConfig]) -> None:
    """Raises AlreadyExists naming the first ``config.port_mappings[i]`` already in use."""
    wanted = [(i, p) for i, p in enumerate(pod.port_mappings) if p.host_port > 0]
    if not wanted:
        return
    taken = [p for other in others for p in other.port_mappings if p.host_port > 0]
    for i, port in wanted:
        where = f"config.port_mappings[{i}]"
        label = f"{port.host_ip or '*'}:{port.host_port}/{port.protocol.name.lower()}"
        if any(_overlaps(port, p) for p in taken):
            raise AlreadyExists(f"{where}: hostPort {label} is used by another pod")
        if _bound_on_host(port):
            raise AlreadyExists(f"{where}: hostPort {label} is in use on the host")


def _bound_on_host(port: PortMapping) -> bool:
    kind = _SOCK_TYPES.get(port.protocol)
    if kind is None:
        return False  # SCTP: nothing to probe with a plain socket
    family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
    anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"
    with socket.socket(family, kind) as probe:
        # A closed connection in TIME_WAIT does not hold the port; a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((port.host_ip or anywhere, port.host_port))
        except OSError as exc:
            # Only "in use" means taken; an address not on this host is portmap's to judge.
            return exc.errno == errno.EADDRINUSE
    return False
