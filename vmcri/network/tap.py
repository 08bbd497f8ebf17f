"""A VM's tap device joined to a pod's CNI interface by tc redirects (netlink, pyroute2).

libvirt and QEMU live in the host network namespace and open a tap by name there,
while the pod's interface (the CNI veth ``eth0``) lives in the pod namespace. So::

    host netns                      pod netns
    create tap ──▶ QEMU opens it ──▶ move tap in ──▶ up, MTU
                                                     ingress(eth0) ─mirred─▶ egress(tap)
                                                     ingress(tap)  ─mirred─▶ egress(eth0)

A tun file descriptor stays attached when its device changes namespace, so QEMU
keeps the queue it opened. The redirects make the pair one wire: every frame that
reaches ``eth0`` goes to the guest and back, and the guest NIC carries the veth's
MAC, so the bridge (or whatever CNI plugged in) never sees a second station.
``eth0`` keeps its CNI address: nothing in the namespace uses it (its ingress is
redirected before the IP stack), and CNI CHECK and DEL expect to find it.

The tap is persistent (it outlives QEMU's file descriptor) so that a VM that died
leaves a device :meth:`TapDevices.remove` deletes; deleting the pod namespace also
unregisters it (the kernel does not move tun devices back to the host).

Netlink in the pod namespace goes through :func:`vmcri.network.netlink.in_netns`.

The u32 match-all classifier is used rather than ``matchall``: it is what Kata
uses and is built into kernels that lack ``cls_matchall`` (this host's is one).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Protocol

from vmcri.errors import HostCommandError, NotFound
from vmcri.network.netlink import in_netns, link_index, netlink

INGRESS = "ffff:"
ETH_P_ALL = 0x0003
U32_MATCH_ALL = "0x0/0x0+0"  # value/mask+offset: every frame
U32_CLASSID = 0x10001  # 1:1; unused (the action steals the frame), but the u32 API wants one
IFNAMSIZ = 16  # including the terminating NUL


@dataclass(frozen=True)
class LinkInfo:
    name: str
    mac: str
    mtu: int


class TapDevices(Protocol):
    """The host side effects of a VM NIC; a fake stands in for it in unit tests."""

    def create(self, tap: str) -> None:
        """A persistent tap ``tap`` in the host namespace (left as is if it exists).

        Raises HostCommandError.
        """

    def attach(self, tap: str, netns_path: str, peer: str, mtu: int) -> None:
        """Move ``tap`` into the namespace, set ``mtu`` (0: keep), bring it up, redirect
        both ways between it and ``peer``. Repeating it is harmless.

        Raises NotFound (namespace or peer missing), HostCommandError.
        """

    def link(self, netns_path: str, name: str) -> LinkInfo:
        """The MAC and MTU of ``name`` in the namespace. Raises NotFound, HostCommandError."""

    def remove(self, tap: str, netns_path: str, peer: str) -> None:
        """Delete ``tap`` wherever it is (pod namespace or host) and the redirect on
        ``peer``; gone already is success. Raises HostCommandError.
        """


class NetlinkTaps:
    """:class:`TapDevices` over rtnetlink with pyroute2 (no ``ip``/``tc`` per call)."""

    def create(self, tap: str) -> None:
        check_name(tap)
        with netlink(f"create tap {tap}") as ipr:
            if link_index(ipr, tap) is None:
                ipr.link("add", ifname=tap, kind="tuntap", mode="tap")

    def attach(self, tap: str, netns_path: str, peer: str, mtu: int) -> None:
        what = f"attach tap {tap} to {peer} in {netns_path}"
        try:
            ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"{what}: network namespace {netns_path} does not exist") from exc
        except OSError as exc:
            raise HostCommandError(f"{what}: {exc}") from exc
        try:
            with netlink(what) as ipr:
                index = link_index(ipr, tap)
                if index is not None:
                    ipr.link("set", index=index, net_ns_fd=ns_fd)
        finally:
            os.close(ns_fd)

        def join(ns: Any) -> None:
            tap_index = link_index(ns, tap)
            peer_index = link_index(ns, peer)
            if tap_index is None:
                raise NotFound(f"{what}: tap {tap} is in neither namespace")
            if peer_index is None:
                raise NotFound(f"{what}: the pod interface {peer} is missing")
            if mtu:
                ns.link("set", index=tap_index, mtu=mtu)
            ns.link("set", index=tap_index, state="up")
            for source, target in ((peer_index, tap_index), (tap_index, peer_index)):
                _redirect(ns, source, target)

        in_netns(netns_path, what, join)

    def link(self, netns_path: str, name: str) -> LinkInfo:
        def read(ns: Any) -> LinkInfo:
            index = link_index(ns, name)
            if index is None:
                raise NotFound(f"interface {name} is not in {netns_path}")
            msg = ns.get_links(index)[0]
            return LinkInfo(name, str(msg.get_attr("IFLA_ADDRESS")), int(msg.get_attr("IFLA_MTU")))

        return in_netns(netns_path, f"read {name} in {netns_path}", read)

    def remove(self, tap: str, netns_path: str, peer: str) -> None:
        places = [netns_path, ""] if netns_path else [""]
        for place in places:

            def delete(ipr: Any, place: str = place) -> None:
                index = link_index(ipr, tap)
                if index is not None:
                    ipr.link("del", index=index)
                # Even without the tap (deleted by hand, or never moved): the redirect on
                # the peer must not outlive the pod's NIC.
                peer_index = link_index(ipr, peer) if place and peer else None
                if peer_index is not None:
                    _drop_ingress(ipr, peer_index)

            try:
                in_netns(place, f"remove tap {tap}", delete)
            except NotFound:
                continue  # the namespace is gone, and the tap with it


def _redirect(ns: Any, source: int, target: int) -> None:
    """A fresh ingress qdisc on ``source`` whose one filter redirects every frame to ``target``.

    Dropping the qdisc first makes a repeated attach (and a tap recreated with a new
    index) end in the same state; the pod side of a CNI veth carries no ingress
    qdisc of anyone else (the bandwidth plugin shapes the host side).
    """
    _drop_ingress(ns, source)
    ns.tc("add", "ingress", source, INGRESS)
    ns.tc(
        "add-filter",
        "u32",
        source,
        parent=INGRESS,
        protocol=ETH_P_ALL,
        keys=[U32_MATCH_ALL],
        target=U32_CLASSID,
        action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target},
    )


def _drop_ingress(ns: Any, index: int) -> None:
    from pyroute2 import NetlinkError

    try:
        ns.tc("del", "ingress", index, INGRESS)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise  # EINVAL/ENOENT: there is no ingress qdisc; ENODEV: the link is gone


def check_name(name: str) -> None:
    """A tap name the kernel takes; raises ValueError (a programming error, not input)."""
    if not name or len(name) >= IFNAMSIZ or "/" in name or name in (".", ".."):
        raise ValueError(f"bad interface name {name!r}")
