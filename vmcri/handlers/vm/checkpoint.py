"""The VM handler's part of a checkpoint (placeholder until the next step)."""

from __future__ import annotations

from vmcri.checkpoint.handler import NoCheckpoints, PodCheckpointer, Refusal
from vmcri.handlers.base import SandboxBackend
from vmcri.handlers.registry import BackendContext


def create(backend: SandboxBackend, options: object, context: BackendContext) -> PodCheckpointer:
    return NoCheckpoints(Refusal("FAILED_PRECONDITION", "VM pods mount a 9p share"))
