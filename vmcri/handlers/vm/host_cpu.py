"""This host's CPU as a KVM guest with ``host-passthrough`` sees it.

A KVM pod VM gets the host's CPU model and every feature flag (``templates/domain.xml.j2``),
so its saved state loads only on a host with the same CPU: a guest that used an
instruction the new host lacks would fault, and KVM refuses some CPU state outright.
The identity is the first processor's vendor, family, model, stepping, name and a digest
of its flags, from ``/proc/cpuinfo``; microcode revisions and frequencies are left out
(they change nothing a guest can use).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
_KEYS = ("vendor_id", "cpu family", "model", "stepping", "model name")


def host_cpu(cpuinfo: Path = CPUINFO) -> str:
    """The CPU identity of this host ("" when ``cpuinfo`` cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block ends here
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = " ".join(sorted(first.get("flags", "").split()))
    digest = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return " | ".join([*(first.get(k, "?") for k in _KEYS), f"flags {digest}"])
