"""From RuntimeClass handler names to backend instances, built from configuration.

A backend is registered here once with its options dataclass, a factory and its
``vmcri doctor`` checks; the daemon and the doctor never branch on a backend's
name or options type anywhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmcri.config import Config, parse_section
from vmcri.errors import ConfigError, NotFound
from vmcri.handlers.base import SandboxBackend
from vmcri.handlers.checkpointer import NoCheckpoints, PodCheckpointer, Refusal
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.services import BackendServices
from vmcri.handlers.vm.options import VmOptions
from vmcri.store.records import SandboxRecord


@dataclass(frozen=True)
class BackendContext:
    """What every backend gets from the daemon."""

    config: Config
    root: Path  # persistent dir of this backend's own data
    state: Path  # runtime dir of this backend's own data
    services: BackendServices  # record look-ups and the exit notification (vmcri.runtime)


def load_ref(ref: str) -> Any:
    """The function a ``"module:function"`` reference names, its module imported now."""
    module_name, func_name = ref.split(":")
    return getattr(importlib.import_module(module_name), func_name)


@dataclass(frozen=True)
class BackendKind:
    options: type
    factory: str  # "module:function" imported only when the backend is used
    # "module:function(handler, options, backends dir) -> list[Check]", imported only
    # by `vmcri doctor` (doctor/run.py), so the daemon never loads the probes.
    doctor: str
    # "module:function(backend, options, context) -> PodCheckpointer": the handler's part of
    # CheckpointPod/RestorePod (vmcri.handlers.checkpointer), built beside the backend.
    checkpointer: str = ""

    def build(self, options: object, context: BackendContext) -> SandboxBackend:
        factory: Callable[[Any, BackendContext], SandboxBackend] = load_ref(self.factory)
        return factory(options, context)

    def build_checkpointer(
        self, backend: SandboxBackend, options: object, context: BackendContext
    ) -> PodCheckpointer:
        if not self.checkpointer:
            return NoCheckpoints(Refusal("UNIMPLEMENTED", "the backend has no checkpoint support"))
        factory: Callable[[Any, Any, BackendContext], PodCheckpointer] = load_ref(self.checkpointer)
        return factory(backend, options, context)


BACKENDS: dict[str, BackendKind] = {
    "vm": BackendKind(
        VmOptions,
        "vmcri.handlers.vm.backend:create",
        "vmcri.doctor.vm_checks:handler_checks",
        "vmcri.handlers.vm.checkpoint:create",
    ),
    "runc": BackendKind(
        RuncOptions,
        "vmcri.handlers.runc.backend:create",
        "vmcri.doctor.runc_checks:handler_checks",
        "vmcri.handlers.runc.checkpoint:create",
    ),
}


def parse_options(config: Config) -> dict[str, object]:
    """Validate every handler's options; raises ConfigError naming the key."""
    parsed: dict[str, object] = {}
    for name, handler in config.runtimes.items():
        kind = BACKENDS.get(handler.backend)
        if kind is None:
            raise ConfigError(f"runtimes.{name}.backend: unknown backend {handler.backend!r}")
        parsed[name] = parse_section(kind.options, handler.options, f"runtimes.{name}.options")
    return parsed


_NO_CHECKPOINTER = NoCheckpoints(Refusal("UNIMPLEMENTED", "the handler has no checkpoint support"))


@dataclass(frozen=True)
class Handler:
    name: str
    backend_name: str
    backend: SandboxBackend
    checkpointer: PodCheckpointer = _NO_CHECKPOINTER


class HandlerRegistry:
    """The configured handlers; ``""`` resolves to the default one."""

    def __init__(self, handlers: dict[str, Handler], default: str) -> None:
        self._handlers = handlers
        self.default = default

    @classmethod
    def from_config(
        cls, config: Config, make_context: Callable[[str, str], BackendContext]
    ) -> HandlerRegistry:
        options = parse_options(config)
        handlers: dict[str, Handler] = {}
        for name, handler in config.runtimes.items():
            context = make_context(name, handler.backend)
            kind = BACKENDS[handler.backend]
            backend = kind.build(options[name], context)
            checkpointer = kind.build_checkpointer(backend, options[name], context)
            handlers[name] = Handler(name, handler.backend, backend, checkpointer)
        return cls(handlers, config.default_runtime_handler)

    def resolve(self, name: str) -> Handler:
        """The handler for a RunPodSandboxRequest.runtime_handler value."""
        handler = self._handlers.get(name or self.default)
        if handler is None:
            known = ", ".join(repr(n) for n in sorted(self._handlers))
            raise NotFound(
                f"runtime_handler {name!r} is not configured (configured handlers: {known})"
            )
        return handler

    def backend_for(self, sandbox: SandboxRecord) -> SandboxBackend:
        """The backend of the handler that made ``sandbox`` (its record names it).

        Raises NotFound when that handler is no longer in the configuration.
        """
        handler = self._handlers.get(sandbox.handler or self.default)
        if handler is None:
            raise NotFound(
                f"pod sandbox {sandbox.id}: its runtime handler {sandbox.handler!r} is not "
                "configured any more; configure it again to stop or remove the pod"
            )
        return handler.backend

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())
