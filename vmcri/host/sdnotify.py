"""systemd's readiness protocol (sd_notify(3)) without libsystemd.

A ``Type=notify`` service tells systemd it is ready by sending ``READY=1`` as
one datagram to the unix socket named by ``$NOTIFY_SOCKET``; a name starting
with ``@`` is in the abstract namespace (a leading NUL byte). Without the
variable (not run by systemd) every call is a no-op. A failed send is logged,
never raised: readiness reporting must not take the daemon down.

The variable is taken out of the environment when read (sd_notify's
``unset_environment``): runc, QEMU helpers and containers must not inherit it.
runc would otherwise proxy the socket into containers, which then fail to start
or could speak to systemd in vmcri's name.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def socket_address(name: str) -> str | bytes:
    """The address ``socket.sendto`` takes for a ``$NOTIFY_SOCKET`` value."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    def __init__(self, name: str) -> None:
        self.name = name  # "" when not run by systemd

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Take ``$NOTIFY_SOCKET`` out of ``environ`` (the process environment by default)."""
        name = (os.environ if environ is None else environ).pop(NOTIFY_SOCKET, "")
        if name and not name.startswith(("/", "@")):
            log.warning("ignoring %s=%r: neither a path nor an abstract name", NOTIFY_SOCKET, name)
            name = ""
        return cls(name)

    def notify(self, state: str) -> bool:
        """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ...); True when it was sent."""
        if not self.name:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), socket_address(self.name))
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.name, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
