"""Linux capabilities of a container: containerd's defaults, CRI add/drop with ``ALL``."""

from __future__ import annotations

from collections.abc import Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import Capabilities

# Every capability runc 1.1 knows, in kernel number order.
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# The set an unprivileged container starts with (the same as containerd and Docker).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def normalise(name: str, field: str) -> str:
    """``net_admin`` / ``NET_ADMIN`` / ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``.

    Raises InvalidArgument naming ``field`` for an unknown capability.
    """
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in ALL_CAPABILITIES:
        raise InvalidArgument(f"{field}: unknown capability {name!r}")
    return full


def all_available(available: Sequence[str] | None) -> list[str]:
    """Every capability the runtime can grant, in kernel order."""
    if available is None:
        return list(ALL_CAPABILITIES)
    return [c for c in ALL_CAPABILITIES if c in available]


def container_capabilities(
    caps: Capabilities, privileged: bool, available: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The (bounding/effective/permitted set, ambient set) of a container.

    Order of the CRI rules (as containerd applies them): ``add: [ALL]`` grants
    everything, ``drop: [ALL]`` removes everything, then the named additions,
    then the named drops, so a capability both added and dropped is dropped.
    Raises InvalidArgument naming the entry for an unknown capability.
    """
    field = "security_context.capabilities"
    current = all_available(available) if privileged else list(DEFAULT_CAPABILITIES)
    adds = [a for a in caps.add if a.upper() != "ALL"]
    drops = [d for d in caps.drop if d.upper() != "ALL"]
    if len(adds) != len(caps.add):
        current = all_available(available)
    if len(drops) != len(caps.drop):
        current = []
    for i, name in enumerate(caps.add):
        if name.upper() != "ALL":
            cap = normalise(name, f"{field}.add_capabilities[{i}]")
            if cap not in current:
                current.append(cap)
    for i, name in enumerate(caps.drop):
        if name.upper() != "ALL":
            cap = normalise(name, f"{field}.drop_capabilities[{i}]")
            if cap in current:
                current.remove(cap)
    ambient = []
    for i, name in enumerate(caps.add_ambient):
        cap = normalise(name, f"{field}.add_ambient_capabilities[{i}]")
        if cap not in ambient:
            ambient.append(cap)
        if cap not in current:
            current.append(cap)
    return current, ambient
