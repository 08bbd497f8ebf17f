"""What a pod's network is, once CNI has set it up: plain data, shared by both backends.

The network layer (CNI in the daemon) fills it in and stores it in the sandbox
record; a backend only reads it. The runc backend's containers join
``netns_path``; the VM backend plugs its NIC into the interface named by
``guest_interface`` and hands the guest its MAC, addresses, routes and MTU, so
the pod IP is the address the containers in the VM have.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NetInterface:
    """An interface from a CNI result (``interfaces[]``)."""

    name: str
    mac: str = ""
    sandbox: str = ""  # the netns path it lives in; "" for a host-side interface (veth peer)
    mtu: int = 0  # 0: not reported


@dataclass(frozen=True)
class IpConfig:
    """An address from a CNI result (``ips[]``)."""

    address: str  # CIDR form: "10.88.0.5/16", "fd00::5/64"
    gateway: str = ""
    interface: int | None = None  # index into PodNetwork.interfaces


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR; "0.0.0.0/0" for the default route
    gw: str = ""
    mtu: int = 0


@dataclass(frozen=True)
class Dns:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodNetwork:
    """A pod's network namespace and the CNI result that configured it.

    ``netns_path`` is the bind-mounted (pinned) namespace; it outlives every
    process in it. ``result`` is the raw CNI result JSON, kept so that DEL after a
    daemon restart gets exactly what ADD returned (the CNI spec asks for it as
    ``prevResult``).
    """

    netns_path: str
    interfaces: tuple[NetInterface, ...] = ()
    ips: tuple[IpConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: Dns = field(default_factory=Dns)
    network_name: str = ""  # the conflist's "name"
    cni_version: str = ""
    result: str = ""  # the CNI result as the last plugin printed it (JSON)
    # What DEL needs to undo ADD exactly, even after the config dir changed or the
    # daemon was killed: the conflist ADD ran with, the interface name, and the
    # capability arguments (runtimeConfig) it was given, as JSON.
    config: str = ""
    ifname: str = ""
    runtime_config: str = ""
    # True once DEL has succeeded (StopPodSandbox); RemovePodSandbox then only unpins.
    released: bool = False

    def pod_interface(self) -> NetInterface | None:
        """The interface inside the pod namespace that the first address is on."""
        for ip in self.ips:
            if ip.interface is not None and 0 <= ip.interface < len(self.interfaces):
                candidate = self.interfaces[ip.interface]
                if candidate.sandbox:
                    return candidate
        return next((i for i in self.interfaces if i.sandbox), None)

    def addresses(self) -> tuple[str, ...]:
        """Pod IPs without prefix length, in result order (first IPv4 first as kubelet wants)."""
        plain = [ip.address.split("/", 1)[0] for ip in self.ips]
        v4 = [a for a in plain if ":" not in a]
        v6 = [a for a in plain if ":" in a]
        return tuple(v4 + v6)
