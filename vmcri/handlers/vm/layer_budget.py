"""How big a new pod's writable layer may be, given what earlier pods were promised.

Policy (ARCHITECTURE.md, "Writable layers on disk, sized per pod"): a new pod gets
``writable_layer_mib`` when that still fits in the free space left above
``writable_layer_reserve_mib`` once every existing layer is full; otherwise it gets
what fits (sized down, and logged: the pod runs, with a smaller disk); when that is
less than the smallest layer there is (``MIN_LAYER_MIB``), RunPodSandbox is refused
with RESOURCE_EXHAUSTED naming the sizes. kubelet then retries, and its eviction of
pods under disk pressure frees room. Refusing outright whenever the full size does not
fit would leave a node with a small disk unable to run any VM pod; sizing down keeps
the sum of promises within the disk either way.
"""

from __future__ import annotations

from vmcri.errors import ResourceExhausted
from vmcri.host.layer_space import LayerSpace

MIN_LAYER_MIB = 64  # as small as options.writable_layer_mib may be set
MIB = 1 << 20


def layer_size(space: LayerSpace, wanted_mib: int, reserve_mib: int) -> int:
    """MiB for a new pod's layer: ``wanted_mib``, or what is left; raises ResourceExhausted."""
    available_mib = space.available_bytes(reserve_mib * MIB) // MIB
    if available_mib >= wanted_mib:
        return wanted_mib
    if available_mib >= MIN_LAYER_MIB:
        return available_mib
    raise ResourceExhausted(
        f"no disk for the pod's writable layer (writable_layer_mib = {wanted_mib}, at least "
        f"{MIN_LAYER_MIB} MiB): {space.free_bytes // MIB} MiB free, of which "
        f"{space.claimable_bytes // MIB} MiB is still promised to {space.layers} pods' layers "
        f"({space.promised_bytes // MIB} MiB in all) and {reserve_mib} MiB is kept free "
        "(writable_layer_reserve_mib)"
    )
