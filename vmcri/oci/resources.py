"""linux.resources of a container (also the body of ``runc update``) and its devices."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import Resources
from vmcri.oci.context import ResolvedDevice

Spec = dict[str, object]

_CPUSET = re.compile(r"^(\d+(-\d+)?)(,\d+(-\d+)?)*$")

# Device cgroup rules of an unprivileged container: deny all, then the usual nodes.
DEFAULT_DEVICE_RULES: tuple[Spec, ...] = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # console
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # ptmx
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # pts
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # tun
)


# kubelet sends cpu_quota -1 for "no CFS quota" (a container with exclusive CPUs under
# DisableCPUQuotaWithExclusiveCPUs); OCI and runc take -1 the same way ("max" in cgroup v2).
# Swap stays non-negative: vmcri does not offer unlimited swap (runtime/containers.py).
NO_QUOTA = -1


def validate_resources(r: Resources, field: str) -> None:
    """Raise InvalidArgument naming ``field.<name>`` for values no kernel accepts."""
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes", "memory_swap_limit_in_bytes"):
        if getattr(r, name) < 0:
            raise InvalidArgument(f"{field}.{name}: must not be negative")
    if r.cpu_quota < NO_QUOTA:
        raise InvalidArgument(f"{field}.cpu_quota: must not be below -1 (no quota)")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument(f"{field}.oom_score_adj: must be between -1000 and 1000")
    if r.cpu_period and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidArgument(f"{field}.cpu_period: must be between 1000 and 1000000 (µs)")
    if r.cpu_quota > 0 and r.cpu_quota < 1000:
        raise InvalidArgument(f"{field}.cpu_quota: must be at least 1000 (µs)")
    for name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(r, name)
        if value and not _CPUSET.match(value):
            raise InvalidArgument(f"{field}.{name}: {value!r} is not a CPU list like 0-2,4")
    if (
        r.memory_swap_limit_in_bytes
        and r.memory_limit_in_bytes
        and r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes
    ):
        raise InvalidArgument(
            f"{field}.memory_swap_limit_in_bytes: must not be below memory_limit_in_bytes"
        )
    for size, limit in r.hugepage_limits:
        if limit < 0:
            raise InvalidArgument(f"{field}.hugepage_limits[{size}]: must not be negative")


def linux_resources(r: Resources, pids_limit: int = 0) -> Spec:
    """The OCI LinuxResources object for ``r`` (only what is set).

    Raises InvalidArgument for invalid values (see :func:`validate_resources`).
    """
    validate_resources(r, "resources")
    out: Spec = {}
    cpu: Spec = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: Spec = {}
    if r.memory_limit_in_bytes:
        memory["limit"] = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes:
        memory["swap"] = r.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if pids_limit:
        out["pids"] = {"limit": pids_limit}
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": s, "limit": lim} for s, lim in r.hugepage_limits]
    if r.unified:
        out["unified"] = dict(r.unified)
    return out


def oom_score_adj(requested: int, floor: int | None) -> int | None:
    """The process.oomScoreAdj to set: None when unset (0), never below ``floor``.

    Kubernetes asks for e.g. -997 for Guaranteed pods; where the runtime cannot
    lower its own score (no CAP_SYS_RESOURCE) that would fail the start, so the
    request is raised to the floor. A value the caller did not ask for is never set.
    """
    if requested == 0:
        return None
    if floor is not None and requested < floor:
        return floor
    return requested


def device_entries(
    devices: Sequence[ResolvedDevice],
) -> tuple[list[Spec], list[Spec]]:
    """(linux.devices, cgroup allow rules) for the container's resolved devices.

    Raises InvalidArgument naming ``devices[i]`` for bad permissions or paths.
    """
    nodes: list[Spec] = []
    rules: list[Spec] = []
    for i, dev in enumerate(devices):
        if not dev.permissions or set(dev.permissions) - set("rwm"):
            raise InvalidArgument(
                f"devices[{i}].permissions: {dev.permissions!r} must be a subset of 'rwm'"
            )
        if not dev.container_path.startswith("/"):
            raise InvalidArgument(f"devices[{i}].container_path: must be an absolute path")
        if dev.type not in ("c", "b"):
            raise InvalidArgument(f"devices[{i}].host_path: not a character or block device")
        nodes.append(
            {
                "path": dev.container_path,
                "type": dev.type,
                "major": dev.major,
                "minor": dev.minor,
                "fileMode": dev.file_mode,
                "uid": dev.uid,
                "gid": dev.gid,
            }
        )
        rules.append(
            {
                "allow": True,
                "type": dev.type,
                "major": dev.major,
                "minor": dev.minor,
                "access": dev.permissions,
            }
        )
    return nodes, rules
