"""A fake of the guest agent's IdMapper (``vmcri/agent/guest/idmap.py``): a clone is a
mount recorded in a FakeMounter; sources on ``unmappable`` file systems are refused as
the kernel refuses tmpfs before Linux 6.3."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.support.guest_mounter import FakeMounter
from vmcri.agent.guest.idmap import IdMaps
from vmcri.errors import FailedPrecondition

USERNS = "/proc/4242/ns/user"


class FakeIdMapper:
    def __init__(self, mounter: FakeMounter, unmappable: tuple[str, ...] = ()) -> None:
        self.mounter = mounter
        self.unmappable = unmappable
        self.namespaces: list[IdMaps] = []
        self.clones: list[tuple[str, str, bool]] = []
        self.open = False

    @contextlib.contextmanager
    def userns(self, maps: IdMaps) -> Iterator[str]:
        self.namespaces.append(maps)
        self.open = True
        try:
            yield USERNS
        finally:
            self.open = False

    def map_tree(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        assert self.open and userns_path == USERNS
        if source.startswith(self.unmappable) and self.unmappable:
            raise FailedPrecondition(f"{source}: its file system cannot be ID-mapped")
        self.clones.append((source, target, recursive))
        self.mounter.mount(source, target, "", 0, "idmapped")
