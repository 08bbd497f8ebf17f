"""NRI's validating plugins: a verdict on a container's merged adjustment before it holds.

A plugin subscribed to VALIDATE_CONTAINER_ADJUSTMENT is asked, after every plugin has
answered CreateContainer, whether the merged result may stand: it is sent the container
as asked for, the merged adjustment, the merged updates of other containers, which
plugin set what (NRI's OwningPlugins, from merge.py's owners) and the plugins consulted.
One rejection fails CreateContainer, naming the validator and its reason (bounded). As
in NRI (pkg/adaptation: a validator's failed call is an error), a validator that cannot
give its verdict (it times out, hangs up or answers garbage, and is disconnected for it)
fails the creation too: a policy plugin that is consulted fails closed. A validator
already disconnected before its turn (for another call) is not consulted, as NRI drops a
closed plugin. Validators are asked in index order,
each within the request timeout (NRI asks them at once; the bound is one timeout each).
"""

from __future__ import annotations

from vmcri.api import nri_pb2
from vmcri.errors import PluginError
from vmcri.nri.merge import CreateResult
from vmcri.nri.plugin import Plugin

MAX_REASON = 512
"""Characters of a validator's reason quoted in the error."""


def validate(
    request: nri_pb2.CreateContainerRequest,
    result: CreateResult,
    consulted: list[Plugin],
    validators: list[Plugin],
) -> None:
    """Raises PluginError when a validator rejects ``result`` or gives no verdict."""
    if not validators:
        return
    ask = nri_pb2.ValidateContainerAdjustmentRequest(
        pod=request.pod,
        container=request.container,
        adjust=result.adjust,
        update=list(result.updates.values()),
        owners=result.owners(),
        plugins=[nri_pb2.PluginInstance(name=p.base, index=p.idx) for p in consulted],
    )
    name = request.container.name
    for validator in validators:
        if validator.closed:
            continue  # disconnected before its turn (for another call): no longer consulted
        reply = validator.call(
            "ValidateContainerAdjustment", ask, nri_pb2.ValidateContainerAdjustmentResponse
        )
        if reply is None:
            raise PluginError(
                f"NRI validator {validator.name} gave no verdict on container {name!r} "
                "(disconnected): creation refused"
            )
        if reply.reject:
            reason = "".join(c if c.isprintable() else "?" for c in reply.reason[:MAX_REASON])
            raise PluginError(
                f"NRI validator {validator.name} rejected the adjustment of container "
                f"{name!r}: {reason or 'no reason given'}"
            )
