"""``FakeMounter``: the host's mounts, recorded and never made."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class FakeMounter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def overlay(self, lowerdirs: Sequence[str], upper: Path, work: Path, target: Path) -> None:
        self.calls.append(("overlay", str(target)))

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        self.calls.append(("view", str(target)))

    def bind(
        self,
        source: Path,
        target: Path,
        readonly: bool = False,
        *,
        recursive_readonly: bool = False,
        follow_host: bool = False,
        namespace: Path | None = None,
    ) -> None:
        self.calls.append(("bind", str(target)))

    def share_readonly(self, source: Path, target: Path, namespace: Path) -> None:
        source.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        self.calls.append(("share", str(target)))

    def release_share(self, target: Path) -> None:
        self.calls.append(("release", str(target)))

    def sized_fs(self, image: Path, target: Path, size_mib: int) -> None:
        image.write_bytes(b"")
        target.mkdir(parents=True, exist_ok=True)
        self.calls.append(("sized_fs", str(target)))

    def fs_image(self, image: Path, size_mib: int) -> None:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        self.calls.append(("fs_image", str(image)))

    def make_private(self, path: Path) -> None:
        self.calls.append(("private", str(path)))

    def unmount(self, target: Path) -> None:
        self.calls.append(("unmount", str(target)))

    def unmount_below(self, root: Path, namespace: Path | None = None) -> None:
        self.calls.append(("unmount_below", str(root)))
