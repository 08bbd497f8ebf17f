from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from vmcri.config import parse_config_text
from vmcri.errors import NotFound
from vmcri.handlers.base import HandlerFeatures
from vmcri.handlers.registry import Handler, HandlerRegistry
from vmcri.ids import new_id
from vmcri.model import Condition, Metadata, PodConfig
from vmcri.store.records import SandboxRecord


class FakeBackend:
    def features(self) -> HandlerFeatures:
        return HandlerFeatures()

    def conditions(self) -> Sequence[Condition]:
        return ()


def registry() -> HandlerRegistry:
    backend: Any = FakeBackend()
    return HandlerRegistry(
        {"vm": Handler("vm", "vm", backend), "runc": Handler("runc", "runc", backend)}, "vm"
    )


def test_empty_handler_is_the_default() -> None:
    assert registry().resolve("").name == "vm"
    assert registry().resolve("runc").backend_name == "runc"


def test_unknown_handler_names_the_configured_ones() -> None:
    with pytest.raises(NotFound, match=r"'kata'.*'runc', 'vm'"):
        registry().resolve("kata")


def test_from_config_builds_each_backend_through_its_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str, object]] = []

    def fake_build(self: Any, options: object, context: object) -> object:
        built.append((self.factory, options))
        return FakeBackend()

    monkeypatch.setattr("vmcri.handlers.registry.BackendKind.build", fake_build)
    config = parse_config_text(
        "default_runtime_handler='a'\n[runtimes.a]\nbackend='runc'\n[runtimes.b]\nbackend='vm'\n"
    )
    reg = HandlerRegistry.from_config(config, lambda name, backend: None)  # type: ignore[arg-type,return-value]
    assert sorted(h.name for h in reg) == ["a", "b"]
    assert sorted(f for f, _ in built) == [
        "vmcri.handlers.runc.backend:create",
        "vmcri.handlers.vm.backend:create",
    ]


def sandbox(handler: str) -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
    return SandboxRecord(id=new_id(), handler=handler, backend="vm", config=config)


def two_of_a_kind() -> tuple[HandlerRegistry, dict[str, Any]]:
    backends: dict[str, Any] = {name: FakeBackend() for name in ("vm", "vm-kvm", "runc")}
    handlers = {
        "vm": Handler("vm", "vm", backends["vm"]),
        "vm-kvm": Handler("vm-kvm", "vm", backends["vm-kvm"]),
        "runc": Handler("runc", "runc", backends["runc"]),
    }
    return HandlerRegistry(handlers, "vm"), backends


def test_backend_for_is_the_backend_of_the_sandboxs_own_handler_not_of_its_kind() -> None:
    reg, backends = two_of_a_kind()
    assert reg.backend_for(sandbox("vm-kvm")) is backends["vm-kvm"]
    assert reg.backend_for(sandbox("vm")) is backends["vm"]
    assert reg.backend_for(sandbox("runc")) is backends["runc"]


def test_backend_for_a_record_without_a_handler_is_the_default() -> None:
    reg, backends = two_of_a_kind()
    assert reg.backend_for(sandbox("")) is backends["vm"]


def test_backend_for_a_handler_no_longer_configured_names_the_pod_and_the_handler() -> None:
    reg, _ = two_of_a_kind()
    gone = sandbox("kata")
    with pytest.raises(NotFound, match=rf"pod sandbox {gone.id}: its runtime handler 'kata'"):
        reg.backend_for(gone)
