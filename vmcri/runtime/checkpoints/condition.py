"""The Status condition that says which runtime handlers can checkpoint, and why not.

The CRI's RuntimeHandlerFeatures has no field for it, so it is a runtime condition:
kubelet reads only RuntimeReady and NetworkReady, a client (crictl info) sees this one.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmcri.handlers.registry import Handler
from vmcri.model import Condition

CONDITION = "PodCheckpointRestore"


def checkpoint_condition(handlers: Iterable[Handler]) -> Condition:
    """True when some handler can checkpoint; the message names each and why not."""
    able: list[str] = []
    unable: list[str] = []
    for handler in handlers:
        refusal = handler.checkpointer.unavailable()
        if refusal is None:
            able.append(handler.name)
        else:
            unable.append(f"{handler.name}: {refusal.reason}")
    parts = ([f"can checkpoint: {', '.join(able)}"] if able else []) + unable
    reason = "HandlersCanCheckpoint" if able else "NoHandlerCanCheckpoint"
    return Condition(CONDITION, bool(able), reason, "; ".join(parts))
