"""A CNI result (1.x, and the 0.3/0.4 form with ``ips[].version``) as a ``PodNetwork``
(:mod:`vmcri.store.pod_network`).

Results come from plugins, which run as root but may be third-party: every
field is type-checked and addresses are parsed with :mod:`ipaddress`; a result
that does not hold up fails the ADD rather than putting junk into a pod's
/etc/hosts or a guest's configuration.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from vmcri.errors import ProtocolError
from vmcri.store.pod_network import Dns, IpConfig, NetInterface, PodNetwork, Route

MAX_ENTRIES = 64


def parse_result(raw: bytes | str, netns_path: str) -> PodNetwork:
    """The pod network a final ADD result describes. Raises ProtocolError naming the field."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"CNI result: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("CNI result: must be a JSON object")
    version = _str(data, "cniVersion", "result")
    interfaces = tuple(
        _interface(item, f"result.interfaces[{i}]")
        for i, item in enumerate(_list(data, "interfaces"))
    )
    ips = tuple(
        _ip(item, f"result.ips[{i}]", len(interfaces)) for i, item in enumerate(_list(data, "ips"))
    )
    routes = tuple(
        _route(item, f"result.routes[{i}]") for i, item in enumerate(_list(data, "routes"))
    )
    dns_data = data.get("dns") or {}
    if not isinstance(dns_data, dict):
        raise ProtocolError("result.dns: must be an object")
    dns = Dns(
        nameservers=_strings(dns_data, "nameservers", "result.dns"),
        domain=_str(dns_data, "domain", "result.dns"),
        search=_strings(dns_data, "search", "result.dns"),
        options=_strings(dns_data, "options", "result.dns"),
    )
    return PodNetwork(
        netns_path=netns_path,
        interfaces=interfaces,
        ips=ips,
        routes=routes,
        dns=dns,
        cni_version=version,
        result=raw.decode() if isinstance(raw, bytes) else raw,
    )


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise ProtocolError(f"result.{key}: must be a list of at most {MAX_ENTRIES}")
    return value


def _str(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError(f"{where}.{key}: must be a short string")
    return value


def _strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise ProtocolError(f"{where}.{key}: must be a list of strings")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise ProtocolError(f"{where}.{key}[{i}]: {item!r} is not a valid entry")
        out.append(item)
    return tuple(out)


def _interface(item: Any, where: str) -> NetInterface:
    if not isinstance(item, dict):
        raise ProtocolError(f"{where}: must be an object")
    mtu = item.get("mtu", 0)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 0 <= mtu <= 65535:
        raise ProtocolError(f"{where}.mtu: must be an integer 0..65535")
    name = _str(item, "name", where)
    if not name:
        raise ProtocolError(f"{where}.name: missing")
    return NetInterface(
        name=name, mac=_str(item, "mac", where), sandbox=_str(item, "sandbox", where), mtu=mtu
    )


def _ip(item: Any, where: str, n_interfaces: int) -> IpConfig:
    if not isinstance(item, dict):
        raise ProtocolError(f"{where}: must be an object")
    address = _str(item, "address", where)
    try:
        ipaddress.ip_interface(address)
    except ValueError as exc:
        raise ProtocolError(f"{where}.address: {address!r} is not an address/prefix") from exc
    gateway = _str(item, "gateway", where)
    if gateway:
        _check_ip(gateway, f"{where}.gateway")
    index = item.get("interface")
    if index is not None and (
        isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_interfaces
    ):
        raise ProtocolError(f"{where}.interface: {index!r} is not an index into interfaces")
    return IpConfig(address=address, gateway=gateway, interface=index)


def _route(item: Any, where: str) -> Route:
    if not isinstance(item, dict):
        raise ProtocolError(f"{where}: must be an object")
    dst = _str(item, "dst", where)
    try:
        ipaddress.ip_network(dst, strict=False)
    except ValueError as exc:
        raise ProtocolError(f"{where}.dst: {dst!r} is not a network") from exc
    gw = _str(item, "gw", where)
    if gw:
        _check_ip(gw, f"{where}.gw")
    mtu = item.get("mtu", 0)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 0 <= mtu <= 65535:
        raise ProtocolError(f"{where}.mtu: must be an integer 0..65535")
    return Route(dst=dst, gw=gw, mtu=mtu)


def _check_ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ProtocolError(f"{where}: {value!r} is not an IP address") from exc
