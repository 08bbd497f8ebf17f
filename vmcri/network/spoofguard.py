"""A pod's anti-spoofing table (``antispoof.py``) put in place after CNI ADD, taken away at DEL.

The network layer does it for every pod with a CNI network, so both handlers get it
once: a runc pod's processes and a VM pod's guest (whose tap is redirected into the
veth) send through the same pod interface. Pods without one (host network, or
networking disabled) get nothing.

Where it is enforced, and why there::

    pod netns                         host netns
    eth0 (veth) ───────────────────▶ vethXXXX ──ingress: table vmcri-pod-<id>──▶ bridge
     ▲ tc redirect from the VM's tap            (nftables, netdev family)

The host end of the veth is in the host's namespace, which no process of the pod can
reach (a runc container would need the host's NET_ADMIN, a guest cannot touch the host
at all). The peer is found through netlink (the pod interface's link index, checked
to point back at it), not taken from the CNI result, which may not name it.
Considered and not taken:

* tc in the pod namespace (u32 before the tap's redirect, or egress of ``eth0``): a runc
  container given NET_ADMIN removes it, and a raw socket with ``PACKET_QDISC_BYPASS``
  (NET_RAW alone) never passes egress hooks. It would also need ``act_gact`` (a drop
  action) and ``cls_flower``, which this project's test kernel does not have.
* ebtables on the bridge: the bridge plugin only. pyroute2's nftables: experimental,
  every rule hand-encoded as expressions; ``nft`` (Debian's ``nftables``, priority
  important) takes the readable ruleset and applies it as one transaction.

An interface that is not a veth with its peer in the host namespace (macvlan, ipvlan,
SR-IOV) has no host end to hook: such a pod is not guarded, and that is logged.

The pod namespace also stops taking router advertisements (``accept_ra = 0``: a new
namespace starts at 1), unless the pod set that sysctl itself; its addresses and
routes come from CNI. A VM's guest sets the same for itself (``agent/guest/network.py``).
"""

from __future__ import annotations

import errno
import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vmcri.errors import FailedPrecondition, HostCommandError, NotFound
from vmcri.network.antispoof import pod_addresses, removal, ruleset
from vmcri.network.netlink import in_netns, link_index
from vmcri.store.pod_network import PodNetwork

log = logging.getLogger(__name__)

NFT_TIMEOUT_S = 20.0
PROC_SYS_IPV6_CONF = Path("/proc/sys/net/ipv6/conf")
ACCEPT_RA = "accept_ra"


class SpoofGuard(Protocol):
    """Host side effects of anti-spoofing; a fake stands in for it in unit tests."""

    def install(self, sandbox_id: str, network: PodNetwork, sysctls: Mapping[str, str]) -> bool:
        """Put the pod's table in place (replacing an old one) and turn off router
        advertisements in its namespace, unless ``sysctls`` (the pod's) set them.

        False when the pod interface has no host end to hook (logged). Raises
        FailedPrecondition (no ``nft``), NotFound (namespace or interface gone),
        HostCommandError.
        """

    def remove(self, sandbox_id: str) -> None:
        """Delete the pod's table; none there (or no ``nft``) is success.

        Raises HostCommandError.
        """


@dataclass(frozen=True)
class PodLink:
    name: str
    mac: str
    host_peer: str  # "": not a veth with its peer in the host namespace


class NftSpoofGuard:
    """:class:`SpoofGuard` with ``nft`` and rtnetlink."""

    def install(self, sandbox_id: str, network: PodNetwork, sysctls: Mapping[str, str]) -> bool:
        pod_if = network.pod_interface()
        # A result that names no interface in the pod: the one CNI was asked to make.
        name = pod_if.name if pod_if is not None else network.ifname or "eth0"
        link = pod_link(network.netns_path, name)
        _refuse_router_ads(network.netns_path, link.name, sysctls)
        if not link.host_peer:
            log.warning(
                "sandbox %s: pod interface %s is not a veth with its peer in the host "
                "namespace; its frames are not checked for spoofed addresses",
                sandbox_id,
                link.name,
            )
            return False
        try:
            pod = pod_addresses(network, (pod_if.mac if pod_if is not None else "") or link.mac)
        except ValueError as exc:
            raise HostCommandError(f"sandbox {sandbox_id}: {exc}") from exc
        run_nft(ruleset(sandbox_id, link.host_peer, pod))
        return True

    def remove(self, sandbox_id: str) -> None:
        try:
            run_nft(removal(sandbox_id))
        except FailedPrecondition:
            return  # without nft no table was ever made, and DEL must still run


def pod_link(netns_path: str, name: str) -> PodLink:
    """The pod interface's MAC and the name of its veth peer in the host namespace.

    Raises NotFound (no such namespace or interface), HostCommandError.
    """
    what = f"read {name} in {netns_path}"

    def inside(ipr: Any) -> tuple[int, str, str, int | None]:
        index = link_index(ipr, name)
        if index is None:
            raise NotFound(f"{what}: no such interface")
        msg = ipr.get_links(index)[0]
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
        peer = msg.get_attr("IFLA_LINK")
        remote = msg.get_attr("IFLA_LINK_NETNSID") is not None
        return index, str(msg.get_attr("IFLA_ADDRESS")), str(kind), peer if remote else None

    index, mac, kind, peer = in_netns(netns_path, what, inside)
    if kind != "veth" or not peer:
        return PodLink(name, mac, "")

    def outside(ipr: Any) -> str:
        from pyroute2 import NetlinkError

        try:
            msg = ipr.get_links(peer)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return ""  # the peer is in some other namespace
            raise
        # Another namespace's index may be taken here by an unrelated link: it is the
        # peer only if it is a veth whose own peer has the pod interface's index.
        if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "veth":
            return ""
        if msg.get_attr("IFLA_LINK") != index or msg.get_attr("IFLA_LINK_NETNSID") is None:
            return ""
        return str(msg.get_attr("IFLA_IFNAME"))

    return PodLink(name, mac, in_netns("", f"find the host end of {name}", outside))


def run_nft(script: str) -> None:
    """``nft -f -`` on ``script`` in the host namespace: all of it or none of it.

    Raises FailedPrecondition (nft is not installed), HostCommandError.
    """
    try:
        done = subprocess.run(
            ["nft", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            "nft is not installed (Debian package nftables): pods cannot be kept from "
            "spoofing other pods' addresses"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostCommandError(f"nft: {exc}") from exc
    if done.returncode != 0:
        raise HostCommandError(f"nft: {done.stderr.strip()[:400]}")


def _refuse_router_ads(netns_path: str, name: str, sysctls: Mapping[str, str]) -> None:
    """``accept_ra = 0`` for all, default and the pod interface, but for keys the pod set."""

    chosen = {key.replace("/", ".") for key in sysctls}

    def write(_ipr: Any) -> None:
        # This thread is in the pod namespace: /proc/sys/net is looked up in it.
        for scope in ("all", "default", name):
            if f"net.ipv6.conf.{scope}.{ACCEPT_RA}" in chosen:
                continue
            path = PROC_SYS_IPV6_CONF / scope / ACCEPT_RA
            try:
                path.write_text("0")
            except FileNotFoundError:
                return  # IPv6 is off in this kernel or namespace: nothing to refuse
            except OSError as exc:
                raise HostCommandError(f"{path} in {netns_path}: {exc}") from exc

    in_netns(netns_path, f"turn off router advertisements in {netns_path}", write)
