"""systemd's readiness protocol (sd_notify(3)) without libsystemd.

A ``Type=notify`` service tells systemd it is ready by sending ``READY=1`` as
one datagram to the unix socket named by ``$NOTIFY_SOCKET``; a name starting
with ``@`` is in the abstract namespace (a leading NUL byte). Without the
variable (not run by systemd) every call is a no-op. A failed send is logged,
never raised: readiness reporting must not take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def socket_address(name: str) -> str | bytes:
    """The address ``socket.sendto`` takes for a ``$NOTIFY_SOCKET`` value."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ...); True when it was sent."""
    name = (os.environ if environ is None else environ).get(NOTIFY_SOCKET, "")
    if not name:
        return False
    if not (name.startswith("/") or name.startswith("@")):
        log.warning("ignoring %s=%r: neither a path nor an abstract name", NOTIFY_SOCKET, name)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), socket_address(name))
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", name, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")
