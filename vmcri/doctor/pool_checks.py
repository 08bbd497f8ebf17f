"""The warm pool of a ``vm`` handler: how many restored VMs wait, and the memory they hold."""

from __future__ import annotations

from pathlib import Path

from vmcri.doctor.model import Check, Status
from vmcri.handlers.vm.pool_vms import pool_vms_on_disk


def check_pool(handler: str, pool_size: int, template: str, backends: Path) -> Check:
    """What the handler's pool holds now, as its VMs' markers say (the daemon need not run);
    their RAM counts against the node as its pods' does."""
    if pool_size <= 0:
        return Check("pool", Status.INFO, "off (pool_size = 0)", "each pod is restored or booted",
                     "set options.pool_size to keep restored VMs ready", handler)  # fmt: skip
    if template != "auto":
        return Check("pool", Status.DEGRADED, f"pool_size = {pool_size} with templates off",
                     "no pool: it needs templates", "set options.template = \"auto\"",
                     handler)  # fmt: skip
    vms = pool_vms_on_disk(backends / handler)
    idle = [vm for vm in vms if vm.idle]
    memory_mib = sum(vm.memory_mib for vm in vms)
    return Check(
        "pool",
        Status.OK,
        f"{len(idle)} idle VMs of {pool_size} per shape ({len(vms) - len(idle)} being made), "
        f"holding up to {memory_mib} MiB of guest RAM",
        "RunPodSandbox takes an idle VM; its memory counts as a pod's",
        "",
        handler,
    )
