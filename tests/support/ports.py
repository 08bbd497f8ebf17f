"""Free TCP ports for tests: asked of the kernel, never guessed (a fixed number can meet an
ephemeral port some other connection on the machine holds)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing on the host holds now."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port
