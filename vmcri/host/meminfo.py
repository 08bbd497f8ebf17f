"""This host's memory, from ``/proc/meminfo``."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def host_memory_bytes(meminfo: Path = MEMINFO) -> int:
    """MemTotal in bytes. Raises OSError when the file has none."""
    with meminfo.open(encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{meminfo} has no MemTotal")
