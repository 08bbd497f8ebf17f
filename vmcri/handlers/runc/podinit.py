"""Runs once inside a new pod's namespaces (under unshare(1)): hostname, loopback, sysctls.

``python -m vmcri.handlers.runc.podinit --hostname NAME [--loopback] [--sysctl k=v ...]``
Exits non-zero with a message on stderr if any step fails.
"""

from __future__ import annotations

import argparse
import fcntl
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then ifr_flags in the union


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vmcri-podinit")
    p.add_argument("--hostname", default="")
    p.add_argument("--loopback", action="store_true")
    p.add_argument("--sysctl", action="append", default=[])
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.hostname:
            socket.sethostname(args.hostname)
        if args.loopback:
            loopback_up()
        for item in args.sysctl:
            key, _, value = item.partition("=")
            write_sysctl(key, value)
    except OSError as exc:
        print(f"podinit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
