"""A SpoofGuard that records what the network layer asked of it (vmcri/network/spoofguard.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vmcri.store.pod_network import PodNetwork


@dataclass
class FakeSpoofGuard:
    fail: Exception | None = None
    guarded: dict[str, PodNetwork] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def install(self, sandbox_id: str, network: PodNetwork, sysctls: Mapping[str, str]) -> bool:
        self.calls.append(("install", sandbox_id))
        if self.fail is not None:
            raise self.fail
        self.guarded[sandbox_id] = network
        return True

    def remove(self, sandbox_id: str) -> None:
        self.calls.append(("remove", sandbox_id))
        self.guarded.pop(sandbox_id, None)
