"""``NoTaps``: tap devices for pods without a network."""

from __future__ import annotations

from vmcri.network.tap import LinkInfo


class NoTaps:
    """Pods without a network: a tap is never made; removing one finds none."""

    def create(self, tap: str) -> None:
        raise AssertionError("no NIC was planned")

    def attach(self, tap: str, netns_path: str, peer: str, mtu: int) -> None:
        raise AssertionError("no NIC was planned")

    def link(self, netns_path: str, name: str) -> LinkInfo:
        raise AssertionError("no NIC was planned")

    def remove(self, tap: str, netns_path: str, peer: str) -> None:
        pass
