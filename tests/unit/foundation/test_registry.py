from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from vmcri.config import parse_config_text
from vmcri.errors import NotFound
from vmcri.handlers.base import Condition, HandlerFeatures
from vmcri.handlers.registry import Handler, HandlerRegistry


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
