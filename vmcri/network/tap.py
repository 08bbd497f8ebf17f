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

Netlink in the pod namespace goes through a socket made by a throwaway thread that
has joined it (``setns`` moves only the calling thread; a socket stays in the
namespace it was made in). pyroute2's own ``netns=`` forks a helper process,
which dies in a daemon whose gRPC threads hold locks across the fork.

The u32 match-all classifier is used rather than ``matchall``: it is what Kata
uses and is built into kernels that lack ``cls_matchall`` (this host's is one).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vmcri.errors import HostCommandError, NotFound
from vmcri.host.namespaces import CLONE_NEWNET, setns

T = TypeVar("T")

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


@contextmanager
def _netlink(what: str) -> Iterator[Any]:
    """An rtnetlink socket in the calling thread's network namespace."""
    # Imported late: the in-guest agent imports vmcri.network.model, never this.
    from pyroute2 import IPRoute, NetlinkError

    try:
        ipr = IPRoute()
    except OSError as exc:
        raise HostCommandError(f"{what}: cannot open netlink: {exc}") from exc
    try:
        yield ipr
    except NetlinkError as exc:
        raise HostCommandError(f"{what}: {exc}") from exc
    finally:
        ipr.close()


def _in(netns_path: str, what: str, fn: Callable[[Any], T]) -> T:
    """``fn(ipr)`` with an rtnetlink socket in ``netns_path`` ("": the host's).

    Raises NotFound when the namespace does not exist, HostCommandError.
    """
    if not netns_path:
        with _netlink(what) as ipr:
            return fn(ipr)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            failure.append(NotFound(f"{what}: network namespace {netns_path} does not exist"))
            failure[0].__cause__ = exc
            return
        except OSError as exc:
            failure.append(HostCommandError(f"{what}: {exc}"))
            return
        try:
            setns(fd, CLONE_NEWNET)  # this thread only, and it ends right after
            with _netlink(what) as ipr:
                outcome.append(fn(ipr))
        except BaseException as exc:
            failure.append(exc)
        finally:
            os.close(fd)

    worker = threading.Thread(target=run, name="netns-netlink", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


class NetlinkTaps:
    """:class:`TapDevices` over rtnetlink with pyroute2 (no ``ip``/``tc`` per call)."""

    def create(self, tap: str) -> None:
        check_name(tap)
        with _netlink(f"create tap {tap}") as ipr:
            if _index(ipr, tap) is None:
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
            with _netlink(what) as ipr:
                index = _index(ipr, tap)
                if index is not None:
                    ipr.link("set", index=index, net_ns_fd=ns_fd)
        finally:
            os.close(ns_fd)

        def join(ns: Any) -> None:
            tap_index = _index(ns, tap)
            peer_index = _index(ns, peer)
            if tap_index is None:
                raise NotFound(f"{what}: tap {tap} is in neither namespace")
            if peer_index is None:
                raise NotFound(f"{what}: the pod interface {peer} is missing")
            if mtu:
                ns.link("set", index=tap_index, mtu=mtu)
            ns.link("set", index=tap_index, state="up")
            for source, target in ((peer_index, tap_index), (tap_index, peer_index)):
                _redirect(ns, source, target)

        _in(netns_path, what, join)

    def link(self, netns_path: str, name: str) -> LinkInfo:
        def read(ns: Any) -> LinkInfo:
            index = _index(ns, name)
            if index is None:
                raise NotFound(f"interface {name} is not in {netns_path}")
            msg = ns.get_links(index)[0]
            return LinkInfo(name, str(msg.get_attr("IFLA_ADDRESS")), int(msg.get_attr("IFLA_MTU")))

        return _in(netns_path, f"read {name} in {netns_path}", read)

    def remove(self, tap: str, netns_path: str, peer: str) -> None:
        places = [netns_path, ""] if netns_path else [""]
        for place in places:

            def delete(ipr: Any, place: str = place) -> None:
                index = _index(ipr, tap)
                if index is not None:
                    ipr.link("del", index=index)
                # Even without the tap (deleted by hand, or never moved): the redirect on
                # the peer must not outlive the pod's NIC.
                peer_index = _index(ipr, peer) if place and peer else None
                if peer_index is not None:
                    _drop_ingress(ipr, peer_index)

            try:
                _in(place, f"remove tap {tap}", delete)
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
