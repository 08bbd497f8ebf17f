"""``nsenter --net=NS python -m vmcri.handlers.runc.netns_dial PORT FD``: connect, pass the socket.

Runs inside a pod's network namespace (see :mod:`vmcri.handlers.runc.streams`), connects
to 127.0.0.1:PORT and sends the connected socket over the unix socket FD with the message
``ok`` (SCM_RIGHTS), or sends ``connect: <reason>``. It imports nothing of vmcri, to
start fast.
"""

from __future__ import annotations

import socket
import sys

TIMEOUT_S = 10.0


def main(argv: list[str]) -> int:
    port, fd = int(argv[0]), int(argv[1])
    channel = socket.socket(fileno=fd)
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    except OSError as exc:
        channel.sendall(f"connect: {exc.strerror or exc}".encode())
        return 1
    socket.send_fds(channel, [b"ok"], [conn.fileno()])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
