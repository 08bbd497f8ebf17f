"""Facts of the host the runc backend feeds into the spec (read once at start-up)."""

from __future__ import annotations

import os

from vmcri.oci.capabilities import ALL_CAPABILITIES


def bounding_capabilities(status_path: str = "/proc/self/status") -> tuple[str, ...] | None:
    """Capabilities in our bounding set (runc cannot grant others), or None if unknown."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return tuple(c for i, c in enumerate(ALL_CAPABILITIES) if mask >> i & 1)
    except (OSError, ValueError):
        return None
    return None


def own_oom_score_adj(path: str = "/proc/self/oom_score_adj") -> int | None:
    """Our oom_score_adj: without CAP_SYS_RESOURCE, runc cannot set a lower one."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def has_cap_sys_resource() -> bool:
    caps = effective_capabilities()
    return caps is None or "CAP_SYS_RESOURCE" in caps


def effective_capabilities(status_path: str = "/proc/self/status") -> tuple[str, ...] | None:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    mask = int(line.split()[1], 16)
                    return tuple(c for i, c in enumerate(ALL_CAPABILITIES) if mask >> i & 1)
    except (OSError, ValueError):
        return None
    return None


def kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False
