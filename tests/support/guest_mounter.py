"""A fake of the guest agent's Mounter (``vmcri/agent/guest/mounts.py``): records each
mount, and says a target is mounted once something was."""

from __future__ import annotations


class FakeMounter:
    def __init__(self) -> None:
        self.mounts: list[tuple[str, str, str, int, str]] = []
        self.unmounted: list[str] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.mounts.append((source, target, fstype, flags, data))

    def umount(self, target: str, *, detach: bool = False) -> None:
        self.unmounted.append(target)
        self.mounts = [m for m in self.mounts if m[1] != target]

    def is_mounted(self, target: str) -> bool:
        return any(m[1] == target for m in self.mounts)

    def load(self) -> None:
        pass
