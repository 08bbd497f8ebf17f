"""rtnetlink (pyroute2) in the host's or a pod's network namespace.

Netlink in a pod namespace goes through a socket made by a throwaway thread that
has joined it (``setns`` moves only the calling thread; a socket stays in the
namespace it was made in). pyroute2's own ``netns=`` forks a helper process,
which dies in a daemon whose gRPC threads hold locks across the fork.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from vmcri.errors import HostCommandError, NotFound
from vmcri.host.namespaces import CLONE_NEWNET, in_namespace

T = TypeVar("T")


@contextmanager
def netlink(what: str) -> Iterator[Any]:
    """An rtnetlink socket in the calling thread's network namespace."""
    # Imported late: the in-guest agent imports vmcri.store.pod_network, never this.
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


def in_netns(netns_path: str, what: str, fn: Callable[[Any], T]) -> T:
    """``fn(ipr)`` with an rtnetlink socket in ``netns_path`` ("": the host's).

    Raises NotFound when the namespace does not exist, HostCommandError.
    """
    if not netns_path:
        with netlink(what) as ipr:
            return fn(ipr)
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFound(f"{what}: network namespace {netns_path} does not exist") from exc
    except OSError as exc:
        raise HostCommandError(f"{what}: {exc}") from exc

    def work() -> T:
        with netlink(what) as ipr:
            return fn(ipr)

    try:
        return in_namespace(fd, CLONE_NEWNET, work, "netns-netlink")
    finally:
        os.close(fd)


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None
