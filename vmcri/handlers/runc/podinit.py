"""Creates a runc pod's namespaces, driven line by line by the daemon over stdin/stdout.

``python -m vmcri.handlers.runc.podinit PLAN_JSON``; the plan (:func:`plan`)
names the namespaces to create and what to put in them. The steps:

1. User namespace, when the pod has one: unshare it, print ``userns`` and
   wait for ``mapped``. The daemon writes our uid_map and gid_map meanwhile:
   only a process privileged in the parent namespace may write arbitrary
   ranges. Every namespace created after this belongs to the new one, which is
   what lets the pod's containers mount /proc, /sys and mqueue inside them.
2. Network, IPC and UTS namespaces, unshared together (the network one is
   joined instead when the plan names ``join_net``: the network layer made
   and configured it); then the hostname, loopback up, and the pod's sysctls
   (``/proc/sys/net`` and the IPC keys are per namespace, so writing them
   here writes the pod's).
3. PID namespace, when the pod shares one: unshared, and a forked child,
   PID 1 there, becomes the pause process (:mod:`vmcri.host.pause`).
4. ``ready <pause pid or 0>``, then wait for stdin to close: the daemon
   bind-mounts our ``/proc/<pid>/ns/*`` onto the pod's files in between, so
   the namespaces outlive us.

Any failure prints ``error <message>`` and exits 1.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys
from collections.abc import Mapping

from vmcri.host import pause as pause_process
from vmcri.host.namespaces import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    setns,
    unshare,
)

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then ifr_flags in the union
_FLAGS = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}


def plan(
    namespaces: Mapping[str, bool],
    hostname: str,
    sysctls: Mapping[str, str],
    pause_pid_file: str,
    join_net: str = "",
) -> str:
    """The JSON argument for this helper. ``namespaces``: kind -> whether to create it."""
    return json.dumps(
        {
            "create": sorted(k for k, v in namespaces.items() if v),
            "hostname": hostname,
            "sysctls": dict(sysctls),
            "pause_pid_file": pause_pid_file,
            "join_net": join_net,
        }
    )


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path, "w") as f:
        f.write(value)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _expect(word: str) -> None:
    got = sys.stdin.readline().strip()
    if got != word:
        raise OSError(f"expected {word!r} from the daemon, got {got!r}")


def run(spec: Mapping[str, object]) -> None:
    create = set(spec["create"])  # type: ignore[call-overload]
    if "user" in create:
        unshare(CLONE_NEWUSER)
        _say("userns")
        _expect("mapped")
    join_net = str(spec.get("join_net") or "")
    if join_net:
        fd = os.open(join_net, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
    flags = 0
    for kind, flag in _FLAGS.items():
        if kind in create:
            flags |= flag
    if flags:
        unshare(flags)
    hostname = str(spec.get("hostname") or "")
    if hostname and "uts" in create:
        socket.sethostname(hostname)
    if "net" in create or join_net:
        loopback_up()
    sysctls = spec.get("sysctls") or {}
    assert isinstance(sysctls, dict)
    for key, value in sorted(sysctls.items()):
        write_sysctl(str(key), str(value))
    pause = 0
    if "pid" in create:
        unshare(CLONE_NEWPID)
        pause = pause_process.start(str(spec["pause_pid_file"]), "user" in create)
    _say(f"ready {pause}")
    sys.stdin.read()  # until the daemon has pinned the namespaces and closes our stdin


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(args[0])
        run(spec)
    except (OSError, ValueError, IndexError, KeyError) as exc:
        _say(f"error {exc}")
        return 1
    return 0


if __name__ == "__main__":
    # No interpreter teardown: nothing is left to flush, and the daemon waits for the exit.
    os._exit(main())
