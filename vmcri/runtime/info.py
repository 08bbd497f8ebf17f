"""Runtime-wide facts for Version, Status and RuntimeConfig."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vmcri import __version__
from vmcri.config import Config
from vmcri.errors import InvalidArgument
from vmcri.handlers.base import HandlerFeatures
from vmcri.model import Condition
from vmcri.runtime.checkpoints.condition import checkpoint_condition
from vmcri.runtime.context import Services

RUNTIME_NAME = "vmcri"
CRI_API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"


@dataclass(frozen=True)
class HandlerInfo:
    name: str
    features: HandlerFeatures


@dataclass(frozen=True)
class RuntimeStatus:
    conditions: tuple[Condition, ...]
    handlers: tuple[HandlerInfo, ...]


class RuntimeInfo:
    def __init__(self, services: Services) -> None:
        self._s = services

    @staticmethod
    def version() -> str:
        return __version__

    def status(self) -> RuntimeStatus:
        conditions = [Condition("RuntimeReady", True), self._network_condition()]
        handlers: list[HandlerInfo] = []
        registry = self._s.handlers
        for handler in registry:
            features = handler.backend.features()
            handlers.append(HandlerInfo(handler.name, features))
            if handler.name == registry.default:
                handlers.append(HandlerInfo("", features))
            conditions.extend(handler.backend.conditions())
        conditions.append(checkpoint_condition(registry))
        return RuntimeStatus(tuple(conditions), tuple(handlers))

    def _network_condition(self) -> Condition:
        # Read from the config dir on every Status call: kubelet waits for
        # NetworkReady while a CNI installer (a DaemonSet) writes the config.
        networking = self._s.networking
        if networking is None:
            return Condition(
                "NetworkReady", False, "NetworkPluginNotReady", "no pod network layer is wired"
            )
        return networking.condition()

    def config(self) -> Config:
        """The daemon's configuration, as verbose Status shows it."""
        return self._s.config

    def cgroup_driver(self) -> str:
        return self._s.config.cgroup_driver

    def update_pod_cidr(self, cidr: str) -> None:
        """Keep kubelet's pod CIDR(s) for CNI's ipRanges; raises InvalidArgument naming it."""
        for part in cidr.split(","):
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError as exc:
                raise InvalidArgument(
                    f"runtime_config.network_config.pod_cidr: {part.strip()!r} is not a CIDR"
                ) from exc
        self._s.network.pod_cidr = cidr
