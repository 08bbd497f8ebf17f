"""The pod VM's NIC: planned from the CNI result, plugged into the pod namespace after boot.

The order is forced by libvirt opening taps by name in the host namespace
(see ``vmcri/network/tap.py``)::

    plan_nic()   tap name, MAC and MTU of the pod interface -> DomainSpec.nic
    plug()       create the tap (host)      before the domain starts
    attach()     move it into the pod netns after the domain started (QEMU holds it)
    unplug()     delete it, wherever it is; idempotent

The guest NIC gets the veth's MAC and the CNI addresses and routes
(:func:`guest_interface`), so the pod IP is the address of the VM itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from vmcri.agent.types import GuestInterface, GuestRoute
from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.domain import Nic
from vmcri.network.tap import TapDevices
from vmcri.store.pod_network import PodNetwork

VHOST_NET = Path("/dev/vhost-net")
TAP_PREFIX = "vmtap"  # + 10 hex digits of the sandbox ID: 15 bytes, the kernel's limit
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MIN_MTU = 68  # IPv4's minimum
MAX_MTU = 65535


@dataclass(frozen=True)
class NicPlan:
    nic: Nic
    netns_path: str
    peer: str  # the pod's CNI interface the tap is joined to
    guest: GuestInterface


def tap_name(sandbox_id: str) -> str:
    return f"{TAP_PREFIX}{sandbox_id[:10]}"


def plan_nic(
    sandbox_id: str, network: PodNetwork | None, taps: TapDevices, vhost: bool
) -> NicPlan | None:
    """What the VM's NIC is, or None for a pod without a pod network (no network
    namespace, or one CNI never configured: networking disabled, loopback only).

    MAC and MTU come from the CNI result, else from the interface itself.
    Raises InvalidArgument (a CNI result this cannot use, named), NotFound,
    HostCommandError.
    """
    if network is None or not network.config:
        return None
    pod_if = network.pod_interface()
    if pod_if is None:
        raise InvalidArgument(
            f"network.interfaces: the CNI result for {network.netns_path} names no "
            "interface inside the pod namespace"
        )
    mac, mtu = pod_if.mac.lower(), pod_if.mtu
    if not mac or not mtu:
        live = taps.link(network.netns_path, pod_if.name)
        mac, mtu = mac or live.mac.lower(), mtu or live.mtu
    if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidArgument(f"network.interfaces[{pod_if.name}].mac {mac!r} is not a unicast MAC")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise InvalidArgument(f"network.interfaces[{pod_if.name}].mtu {mtu} is out of range")
    nic = Nic(mac=mac, tap=tap_name(sandbox_id), mtu=mtu, vhost=vhost)
    return NicPlan(nic, network.netns_path, pod_if.name, guest_interface(network, pod_if.name, nic))


def guest_interface(network: PodNetwork, name: str, nic: Nic) -> GuestInterface:
    """The addresses and routes of the pod interface, for the agent to set on the guest NIC.

    Raises InvalidArgument for an address or route that does not parse.
    """
    index = network.interfaces.index(next(i for i in network.interfaces if i.name == name))
    addresses: list[str] = []
    routes: list[GuestRoute] = []
    for n, ip in enumerate(network.ips):
        if ip.interface is not None and ip.interface != index:
            continue
        try:
            addresses.append(str(ipaddress.ip_interface(ip.address)))
        except ValueError as exc:
            raise InvalidArgument(f"network.ips[{n}].address {ip.address!r}: {exc}") from exc
    for n, route in enumerate(network.routes):
        try:
            dst = str(ipaddress.ip_network(route.dst, strict=False))
            gw = str(ipaddress.ip_address(route.gw)) if route.gw else ""
        except ValueError as exc:
            raise InvalidArgument(
                f"network.routes[{n}] {route.dst!r} via {route.gw!r}: {exc}"
            ) from exc
        routes.append(GuestRoute(dst=dst, gateway=gw))
    return GuestInterface(
        mac=nic.mac, name=name, mtu=nic.mtu, addresses=tuple(addresses), routes=tuple(routes)
    )


def plug(taps: TapDevices, plan: NicPlan) -> None:
    """Create the tap libvirt will open. Raises HostCommandError."""
    taps.create(plan.nic.tap)


def attach(taps: TapDevices, plan: NicPlan) -> None:
    """Move the (now open) tap into the pod namespace and join it to the pod interface.

    Raises NotFound, HostCommandError.
    """
    taps.attach(plan.nic.tap, plan.netns_path, plan.peer, plan.nic.mtu)


def unplug(taps: TapDevices, sandbox_id: str, network: PodNetwork | None) -> None:
    """Delete the sandbox's tap and its redirects; nothing there is success.

    Raises HostCommandError.
    """
    pod_if = network.pod_interface() if network is not None else None
    taps.remove(
        tap_name(sandbox_id),
        network.netns_path if network is not None else "",
        pod_if.name if pod_if is not None else "",
    )


def vhost_usable(device: Path = VHOST_NET) -> bool:
    """vhost-net moves the data path into the host kernel; without it QEMU copies."""
    return device.exists()
