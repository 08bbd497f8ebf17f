"""The pod network inside the guest: the NIC the host plugged in gets the pod's CNI settings.

The host gave the virtio-net NIC the MAC of the pod's CNI interface and joined it to
that interface, so configuring it like the CNI result (name, MTU, addresses, routes)
makes the pod IP the guest's own. Containers share the guest's network namespace.
The request comes from the host (trusted), but is checked whole before anything is
changed, like every agent request; ``ip`` does the work (iproute2 is in the guest root).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, HostCommandError, InvalidArgument

MAX_INTERFACES = 8
MAX_ADDRESSES = 16
MAX_ROUTES = 64
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MIN_MTU = 68
MAX_MTU = 65535
IP_TIMEOUT_S = 10.0

RunIp = Callable[[Sequence[str]], None]


def run_ip(args: Sequence[str]) -> None:
    """Run ``ip ARGS``; raises HostCommandError with its stderr."""
    try:
        subprocess.run(
            ["ip", *args], check=True, capture_output=True, text=True, timeout=IP_TIMEOUT_S
        )
    except subprocess.CalledProcessError as exc:
        raise HostCommandError(f"ip {' '.join(args)}: {exc.stderr.strip()[:300]}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostCommandError(f"ip {' '.join(args)}: {exc}") from exc


def check_interfaces(interfaces: Sequence[agent_pb2.NetInterface]) -> None:
    """Raises InvalidArgument naming the first field that breaks its rule."""
    if len(interfaces) > MAX_INTERFACES:
        raise InvalidArgument(f"more than {MAX_INTERFACES} interfaces")
    names: set[str] = set()
    macs: set[str] = set()
    for n, iface in enumerate(interfaces):
        where = f"interfaces[{n}]"
        if not MAC_RE.match(iface.mac):
            raise InvalidArgument(f"{where}.mac {iface.mac[:40]!r} is not a lower-case MAC")
        if not IFNAME_RE.match(iface.name) or iface.name in (".", "..", "lo"):
            raise InvalidArgument(f"{where}.name {iface.name[:40]!r} is not an interface name")
        if iface.saved_mac and not MAC_RE.match(iface.saved_mac):
            raise InvalidArgument(f"{where}.saved_mac {iface.saved_mac[:40]!r} is not a MAC")
        if iface.name in names or iface.mac in macs:
            raise InvalidArgument(f"{where}: name or MAC repeated")
        names.add(iface.name)
        macs.add(iface.mac)
        if iface.mtu and not MIN_MTU <= iface.mtu <= MAX_MTU:
            raise InvalidArgument(f"{where}.mtu {iface.mtu} is out of range")
        if len(iface.addresses) > MAX_ADDRESSES or len(iface.routes) > MAX_ROUTES:
            raise InvalidArgument(
                f"{where}: more than {MAX_ADDRESSES} addresses or {MAX_ROUTES} routes"
            )
        for address in iface.addresses:
            try:
                if "/" not in address:  # a bare address would be a /32: no on-link gateway
                    raise ValueError("no prefix length")
                ipaddress.ip_interface(address)
            except ValueError as exc:
                raise InvalidArgument(f"{where}.addresses: {address[:60]!r} is not CIDR") from exc
        for route in iface.routes:
            try:
                ipaddress.ip_network(route.dst)
                if route.gateway:
                    ipaddress.ip_address(route.gateway)
            except ValueError as exc:
                raise InvalidArgument(
                    f"{where}.routes: {route.dst[:60]!r} via {route.gateway[:60]!r}: {exc}"
                ) from exc


class GuestNetwork:
    """Configures guest NICs with ``ip``; ``sys_class_net`` finds them by MAC."""

    def __init__(self, run: RunIp = run_ip, sys_class_net: Path = Path("/sys/class/net")) -> None:
        self._run = run
        self._sys = sys_class_net

    def configure(
        self,
        interfaces: Sequence[agent_pb2.NetInterface],
        wait_s: float = 0,
        before_up: Callable[[str], None] = lambda name: None,
    ) -> None:
        """Apply checked interfaces; repeating the same set-up is harmless.

        ``wait_s``: how long a NIC may take to appear (hotplugged into a restored VM).
        ``before_up``: called with each NIC's final name before it gets addresses and goes
        up (per-NIC settings that must hold from its first packet).
        Raises FailedPrecondition (no NIC has the MAC), HostCommandError.
        """
        deadline = time.monotonic() + wait_s
        for iface in interfaces:
            if iface.saved_mac:
                self._readdress(iface.saved_mac, iface.mac)
            current = self._find(iface.mac, deadline)
            if current != iface.name:
                # A name the kernel gave (eth0, eth1...) may be the one asked for by another
                # interface later; renaming needs the link down, which it is before set-up.
                self._run(["link", "set", "dev", current, "down"])
                self._run(["link", "set", "dev", current, "name", iface.name])
            before_up(iface.name)
            if iface.mtu:
                self._run(["link", "set", "dev", iface.name, "mtu", str(iface.mtu)])
            for address in iface.addresses:
                extra = ["nodad"] if ":" in address else []  # usable at once; the MAC is unique
                self._run(["addr", "replace", address, "dev", iface.name, *extra])
            self._run(["link", "set", "dev", iface.name, "up"])
            for route in iface.routes:
                via = ["via", route.gateway] if route.gateway else []
                family = "-6" if ":" in route.dst else "-4"
                self._run([family, "route", "replace", route.dst, *via, "dev", iface.name])

    def _readdress(self, saved_mac: str, mac: str) -> None:
        """A NIC restored from a checkpoint: the pod's new MAC (virtio-net tells QEMU) and
        none of the addresses, routes or neighbours of the node it was saved on. Once done
        (the saved MAC is gone), a repeated set-up finds nothing to do here."""
        try:
            name = self._find(saved_mac)
        except FailedPrecondition:
            return
        self._run(["link", "set", "dev", name, "down"])
        self._run(["addr", "flush", "dev", name])
        self._run(["neigh", "flush", "dev", name])
        self._run(["link", "set", "dev", name, "address", mac])

    def _find(self, mac: str, deadline: float = 0.0) -> str:
        while True:
            try:
                entries = sorted(self._sys.iterdir())
            except OSError as exc:
                raise HostCommandError(f"cannot list {self._sys}: {exc}") from exc
            for entry in entries:
                try:
                    if (entry / "address").read_text().strip().lower() == mac:
                        return entry.name
                except OSError:
                    continue  # an interface that went away, or one without an address
            if time.monotonic() >= deadline:
                break
            # No netlink event loop in the agent: a hotplugged NIC is looked for again.
            time.sleep(0.02)
        raise FailedPrecondition(f"no guest network interface has MAC {mac} (virtio_net missing?)")
