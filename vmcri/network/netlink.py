"""rtnetlink (pyroute2) in the host's or a pod's network namespace.

Netlink in a pod namespace goes through a socket made by a throwaway thread that
has joined it (``setns`` moves only the calling thread; a socket stays in the
namespace it was made in). pyroute2's own ``netns=`` forks a helper process,
which dies in a daemon whose gRPC threads hold locks across the fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from vmcri.errors import HostCommandError, NotFound
from vmcri.host.namespaces import CLONE_NEWNET, setns

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
            with netlink(what) as ipr:
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


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None
