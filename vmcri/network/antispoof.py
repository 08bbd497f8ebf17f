"""What may leave a pod: its own MAC and IPs only, as one nftables table (pure; no I/O).

A pod that sends frames with any source address can take over another pod's IP on
the bridge: a gratuitous ARP (or an IPv6 neighbour advertisement) that names the
victim's IP rewrites the node's neighbour entry, and the node's traffic to the
victim goes to the attacker. A runc pod can do it with ``NET_RAW`` (in the default
capability set), a VM pod with any root process in its guest. So every frame that
leaves a pod is checked against the CNI result, in the shape of libvirt's
``clean-traffic`` filter (no MAC, IP or ARP spoofing, no other L2 traffic)::

    source MAC other than the pod's                            drop
    EtherType other than ARP, IPv4, IPv6 (VLAN tags too)       drop
    ARP: Ethernet/IPv4, sender MAC the pod's,
         sender IP one of the pod's or 0.0.0.0 (RFC 5227 probe) accept
    IPv4 from one of the pod's IPs                             accept
    IPv4 DHCP client from 0.0.0.0 (udp 68 -> 67, broadcast)    accept
    ICMPv6 router advertisement, redirect, router renumbering  drop
    ICMPv6 neighbour advertisement for a target not the pod's  drop
    IPv6 from one of the pod's IPs or its link-local address   accept
    IPv6 from :: : neighbour solicitation (DAD), MLDv2 report  accept
    anything else                                              drop (policy)

The pod's link-local address is the EUI-64 one derived from its MAC: what Linux
gives ``eth0`` in a runc pod and the guest NIC of a VM pod (same MAC), with the
default ``addr_gen_mode``. A pod that asks for another mode (a ``stable_secret``
sysctl) loses its link-local traffic; CNI results carry no link-local address.

The table is one per pod (named after the sandbox) in the host's network
namespace, hooked to the ingress of the host end of the pod's veth: the frames
the pod sends, wherever they come from (a runc pod's processes, or a VM's tap
redirected into the veth), before the bridge or the node's stack sees them.
Nothing in the pod can reach it (see ``spoofguard.py``). Every value put into the
text is parsed first (:mod:`ipaddress`, a MAC and an interface name pattern), so a
CNI result cannot inject rules.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from vmcri.store.pod_network import PodNetwork

TABLE_PREFIX = "vmcri-pod-"
CHAIN = "from-pod"
PRIORITY = -100  # before anything a CNI plugin may hook there (nothing does today)
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# What CNI plugins name host-side veths (vethXXXXXXXX, cali..., lxc...); anything else is
# refused rather than quoted into the ruleset.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
SANDBOX_ID_RE = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class PodAddresses:
    """The source addresses a pod may use: its MAC and its IPs (link-local included)."""

    mac: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def table_name(sandbox_id: str) -> str:
    if not SANDBOX_ID_RE.match(sandbox_id):
        raise ValueError(f"bad sandbox ID {sandbox_id!r}")
    return TABLE_PREFIX + sandbox_id


def link_local(mac: str) -> str:
    """The EUI-64 link-local address of ``mac`` (RFC 4291 appendix A)."""
    octets = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def pod_addresses(network: PodNetwork, mac: str) -> PodAddresses:
    """The pod interface's addresses in the CNI result, and the link-local of ``mac``.

    ``mac`` is the pod interface's (from the result, else read from the interface).
    Raises ValueError for a MAC that is not unicast (results are parsed already).
    """
    mac = mac.lower()
    if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise ValueError(f"pod interface MAC {mac!r} is not a unicast MAC")
    pod_if = network.pod_interface()
    index = network.interfaces.index(pod_if) if pod_if is not None else None
    v4: list[str] = []
    v6: list[str] = [link_local(mac)]
    for ip in network.ips:
        if ip.interface is not None and ip.interface != index:
            continue
        address = ipaddress.ip_interface(ip.address).ip
        bucket = v4 if address.version == 4 else v6
        if str(address) not in bucket:
            bucket.append(str(address))
    return PodAddresses(mac=mac, ipv4=tuple(v4), ipv6=tuple(v6))


def ruleset(sandbox_id: str, device: str, pod: PodAddresses) -> str:
    """The nftables script that (re)places the pod's table: one atomic transaction.

    Declaring the table before deleting it makes the delete succeed whether or not
    an old one exists (nft 1.0.6 has no ``destroy``). Raises ValueError for a name
    that does not fit.
    """
    if not IFNAME_RE.match(device):
        raise ValueError(f"bad interface name {device!r}")
    table = table_name(sandbox_id)
    # "ether type" reads the frame as sent: a VLAN tag shows as 0x8100 here, while the
    # protocol tests below see the (untagged) inner one.
    rules = [f"ether saddr != {pod.mac} drop", "ether type != { arp, ip, ip6 } drop"]
    if pod.ipv4:
        v4 = _set(pod.ipv4)
        rules += [
            "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
            f"arp saddr ether {pod.mac} arp saddr ip {_set(('0.0.0.0', *pod.ipv4))} accept",
            f"ip saddr {v4} accept",
            "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        ]
    # nft 1.0.6 has no "icmpv6 taddr": the target is the 16 bytes after type, code,
    # checksum and the 4 reserved bytes (RFC 4861 4.4); @th is found past any extension
    # headers, and "icmpv6 type" matches the real upper-layer protocol (meta l4proto).
    targets = _set(tuple(hex(int(ipaddress.IPv6Address(a))) for a in pod.ipv6))
    rules += [
        "icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } drop",
        f"icmpv6 type nd-neighbor-advert @th,64,128 != {targets} drop",
        f"ip6 saddr {_set(pod.ipv6)} accept",
        "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept",
    ]
    body = "".join(f"\t\t{rule}\n" for rule in rules)
    return (
        f"table netdev {table}\n"
        f"delete table netdev {table}\n"
        f"table netdev {table} {{\n"
        f"\tchain {CHAIN} {{\n"
        f'\t\ttype filter hook ingress device "{device}" priority {PRIORITY}; policy drop;\n'
        f"{body}"
        "\t}\n"
        "}\n"
    )


def removal(sandbox_id: str) -> str:
    """The nftables script that deletes the pod's table, there or not."""
    table = table_name(sandbox_id)
    return f"table netdev {table}\ndelete table netdev {table}\n"


def _set(values: tuple[str, ...]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"
