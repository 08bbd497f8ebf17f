"""Which sysctls a pod may set: only those namespaced by its own IPC or network namespace."""

from __future__ import annotations

from collections.abc import Mapping

from vmcri.errors import InvalidArgument

_IPC_SYSCTLS = frozenset(
    {
        "kernel.shmmax",
        "kernel.shmall",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmni",
        "kernel.msgmnb",
        "kernel.sem",
    }
)


def validate_sysctls(sysctls: Mapping[str, str], host_network: bool, host_ipc: bool) -> None:
    """Refuse sysctls that would change the host rather than the pod.

    ``net.*`` needs the pod's own network namespace; the IPC ones (``kernel.shm*``,
    ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``) its own IPC namespace.
    Raises InvalidArgument naming ``sysctls[<key>]``.
    """
    for key, value in sysctls.items():
        name = dotted(key)
        field = f"sysctls[{key}]"
        if not name or ".." in name or "\x00" in value or "\n" in value:
            raise InvalidArgument(f"{field}: malformed sysctl")
        if name.startswith("net."):
            if host_network:
                raise InvalidArgument(f"{field}: net.* sysctls need the pod's own network")
        elif name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if host_ipc:
                raise InvalidArgument(f"{field}: IPC sysctls need the pod's own IPC namespace")
        else:
            raise InvalidArgument(f"{field}: not a namespaced sysctl a pod may set")


def dotted(key: str) -> str:
    """``net/ipv4/conf/eth0.1/rp_filter`` -> ``net.ipv4.conf.eth0/1.rp_filter`` (sysctl(8) rule)."""
    if "/" not in key:
        return key
    return key.replace(".", "\0").replace("/", ".").replace("\0", "/")


def normalise(sysctls: Mapping[str, str]) -> dict[str, str]:
    """Every key in the dotted form runc expects."""
    return {dotted(k): v for k, v in sysctls.items()}
