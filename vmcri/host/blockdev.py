"""The kernel's name of a block device, from sysfs (host and guest; standard library only)."""

from __future__ import annotations

from pathlib import Path

SYS_DEV_BLOCK = Path("/sys/dev/block")


def device_name(major: int, minor: int, sys_dev: Path = SYS_DEV_BLOCK) -> str:
    """ "sda", "vda", "loop3"; "major:minor" for a device sysfs does not name."""
    try:
        uevent = (sys_dev / f"{major}:{minor}" / "uevent").read_text()
    except OSError:
        return f"{major}:{minor}"
    for line in uevent.splitlines():
        if line.startswith("DEVNAME="):
            return line.removeprefix("DEVNAME=")
    return f"{major}:{minor}"
