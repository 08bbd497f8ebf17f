"""mount(2) and umount2(2) for the guest agent, behind a Protocol so tests can fake them.

The guest image may lack util-linux's mount binary, so the syscalls are called through ctypes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vmcri.errors import HostCommandError

if TYPE_CHECKING:
    import ctypes

MS_RDONLY = 1
MNT_DETACH = 2


class Mounter(Protocol):
    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        """Raises HostCommandError."""

    def umount(self, target: str, *, detach: bool = False) -> None:
        """Raises HostCommandError; an unmounted target is not an error."""

    def is_mounted(self, target: str) -> bool: ...

    def load(self) -> None:
        """Load what the first mount would (a VM template's warm-up)."""


class LibcMounter:
    """The syscalls through libc. ctypes loads at the first mount, not with the agent: under
    emulation its import takes ~60 ms, and the host's first calls (Ping, SetupSandbox) mount
    nothing."""

    def __init__(self) -> None:
        self._libc: ctypes.CDLL | None = None

    def _call(self, name: str, *args: object) -> int | None:
        """``libc.<name>(*args)``: None when it succeeds, else its errno."""
        import ctypes

        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        rc = getattr(self._libc, name)(*args)
        return None if rc == 0 else ctypes.get_errno()

    def load(self) -> None:
        self._call("getpid")

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        err = self._call(
            "mount", source.encode(), target.encode(), fstype.encode(), flags, data.encode()
        )
        if err is not None:
            raise HostCommandError(
                f"mount -t {fstype} {source} {target} ({data[:500]}): {os.strerror(err)}"
            )

    def umount(self, target: str, *, detach: bool = False) -> None:
        if not self.is_mounted(target):
            return
        err = self._call("umount2", target.encode(), MNT_DETACH if detach else 0)
        if err is not None:
            raise HostCommandError(f"umount {target}: {os.strerror(err)}")

    def is_mounted(self, target: str) -> bool:
        return is_mount_point(target)


def is_mount_point(target: str, mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """True if something is mounted exactly at ``target`` (octal escapes decoded)."""
    wanted = os.path.realpath(target) if os.path.exists(target) else target
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and _unescape(fields[4]) in (wanted, target):
            return True
    return False


def _unescape(field: str) -> str:
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
