"""Free ports for tests: asked of the kernel, never guessed (a fixed number can meet an
ephemeral port some other connection on the machine holds)."""

from __future__ import annotations

import socket


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing on the host holds now: TCP, or UDP with ``socket.SOCK_DGRAM``."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port
