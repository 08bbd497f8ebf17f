"""The disk promised to the VM pods' writable layers against the free disk (a vm handler's)."""

from __future__ import annotations

from pathlib import Path

from vmcri.doctor.model import Check, Status
from vmcri.errors import ResourceExhausted
from vmcri.handlers.vm.layer_budget import layer_size
from vmcri.host.disk import free_bytes
from vmcri.host.layer_space import LayerSpace, measure

MIB = 1 << 20


def _space(backends: Path) -> tuple[LayerSpace, Path]:
    """The layers below ``backends``; before the first start, none, on the nearest
    directory that exists (the file system they will be on). Raises OSError."""
    existing = backends
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == backends:
        return measure(backends), backends
    return LayerSpace(free_bytes(existing), 0, 0, 0), existing


def check_layer_space(backends: Path, handler: str, wanted_mib: int, reserve_mib: int) -> Check:
    """``backends``: ``<root>/backends``; the handler's writable_layer_mib and reserve."""
    if not wanted_mib:
        return Check(
            "writable layers", Status.INFO, "writable_layer_mib = 0: plain directories",
            "a pod's layers are bounded only by the root dir's file system", handler=handler,
        )  # fmt: skip
    try:
        space, where = _space(backends)
    except OSError as exc:
        return Check("writable layers", Status.FAIL, f"{backends}: {exc}", handler=handler)
    found = (
        f"{space.layers} pods' layers promised {space.promised_bytes // MIB} MiB "
        f"({space.claimable_bytes // MIB} MiB not written yet), "
        f"{space.free_bytes // MIB} MiB free on {where}, {reserve_mib} MiB kept free"
    )
    fix = "free disk, lower writable_layer_mib, or move root to a larger file system"
    try:
        size = layer_size(space, wanted_mib, reserve_mib)
    except ResourceExhausted:
        return Check(
            "writable layers", Status.FAIL, found,
            "new VM pods are refused (RESOURCE_EXHAUSTED): no 64 MiB left for a layer",
            fix, handler,
        )  # fmt: skip
    if space.claimable_bytes > space.free_bytes:
        return Check(
            "writable layers", Status.DEGRADED, found,
            "the pods' layers can fill the disk (promised before this limit was kept)",
            fix, handler,
        )  # fmt: skip
    if size < wanted_mib:
        return Check(
            "writable layers", Status.DEGRADED, found,
            f"a new VM pod's layer is sized down to {size} MiB (of {wanted_mib} MiB)",
            fix, handler,
        )  # fmt: skip
    return Check(
        "writable layers", Status.OK, found,
        f"a new VM pod gets its {wanted_mib} MiB layer", handler=handler,
    )  # fmt: skip
