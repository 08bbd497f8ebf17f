"""Traffic counters of a pod's interfaces, read in its network namespace on the host.

The counters come from the host for both handlers, from the CNI interface in the pod's
namespace: for a runc pod it is the pod's own interface, and for a VM pod every frame of
the guest NIC crosses it (the tap and the CNI veth are one wire, joined by tc redirects),
so its counters are the guest NIC's as the node sees them, and nothing the untrusted guest
says goes into them. ``/proc/thread-self/net/dev`` shows the namespace of the reading
thread, so a throwaway thread joins the pod's (``setns`` moves only the calling thread).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vmcri.host.namespaces import CLONE_NEWNET, in_namespace

MAX_INTERFACES = 64


@dataclass(frozen=True)
class InterfaceCounters:
    interface: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


CounterReader = Callable[[str, Sequence[str]], tuple[InterfaceCounters, ...]]


def parse_net_dev(text: str) -> dict[str, InterfaceCounters]:
    """``/proc/net/dev``: two header lines, then ``name: rx(8 fields) tx(8 fields)``."""
    out: dict[str, InterfaceCounters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or not all(f.isdigit() for f in fields[:16]):
            continue
        v = [int(f) for f in fields[:16]]
        out[name.strip()] = InterfaceCounters(
            name.strip(), v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]
        )
        if len(out) >= MAX_INTERFACES:
            break
    return out


def read_counters(netns_path: str, names: Sequence[str]) -> tuple[InterfaceCounters, ...]:
    """Counters of the interfaces ``names`` in the namespace pinned at ``netns_path``.

    Best effort: a namespace or interface that is gone reads as nothing (never raises).
    """
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ()

    def read() -> str:
        with open("/proc/thread-self/net/dev") as f:
            return f.read(1 << 20)

    try:
        text = in_namespace(fd, CLONE_NEWNET, read, "netns-counters")
    except OSError:
        return ()
    finally:
        os.close(fd)
    counters = parse_net_dev(text)
    return tuple(counters[name] for name in names if name in counters)
