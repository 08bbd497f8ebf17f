"""Domain records to NRI messages, and NRI resources back to domain Resources.

The one place (with adjust.py) where NRI's wire types meet vmcri's domain types.
"""

from __future__ import annotations

from vmcri.api import nri_pb2
from vmcri.model import ContainerConfig, Resources
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord

_STATES = {
    ContainerState.CREATED: nri_pb2.CONTAINER_CREATED,
    ContainerState.RUNNING: nri_pb2.CONTAINER_RUNNING,
    ContainerState.EXITED: nri_pb2.CONTAINER_STOPPED,
    ContainerState.UNKNOWN: nri_pb2.CONTAINER_UNKNOWN,
}


def resources_message(r: Resources) -> nri_pb2.LinuxResources:
    out = nri_pb2.LinuxResources()
    if r.memory_limit_in_bytes:
        out.memory.limit.value = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes:
        out.memory.swap.value = r.memory_swap_limit_in_bytes
    if r.cpu_shares:
        out.cpu.shares.value = r.cpu_shares
    if r.cpu_quota:
        out.cpu.quota.value = r.cpu_quota
    if r.cpu_period:
        out.cpu.period.value = r.cpu_period
    out.cpu.cpus = r.cpuset_cpus
    out.cpu.mems = r.cpuset_mems
    for size, limit in r.hugepage_limits:
        out.hugepage_limits.add(page_size=size, limit=limit)
    out.unified.update(dict(r.unified))
    return out


def pod_message(sandbox: SandboxRecord) -> nri_pb2.PodSandbox:
    config = sandbox.config
    meta = config.metadata
    pod = nri_pb2.PodSandbox(
        id=sandbox.id,
        name=meta.name,
        uid=meta.uid,
        namespace=meta.namespace,
        labels=config.labels,
        annotations=config.annotations,
        runtime_handler=sandbox.handler,
        # While RunPodSandbox runs the addresses are only in the network's record.
        ips=sandbox.network.addresses()
        if sandbox.network is not None
        else [ip for ip in (sandbox.ip, *sandbox.additional_ips) if ip],
    )
    pod.linux.cgroup_parent = config.cgroup_parent
    pod.linux.pod_overhead.CopyFrom(resources_message(config.overhead))
    pod.linux.pod_resources.CopyFrom(resources_message(config.resources))
    return pod


def container_message(
    container_id: str,
    sandbox_id: str,
    config: ContainerConfig,
    record: ContainerRecord | None = None,
) -> nri_pb2.Container:
    """The container as plugins see it; ``record`` (absent while it is being created)
    adds its state, times, pid and exit."""
    out = nri_pb2.Container(
        id=container_id,
        pod_sandbox_id=sandbox_id,
        name=config.metadata.name,
        state=nri_pb2.CONTAINER_UNKNOWN,
        labels=config.labels,
        annotations=config.annotations,
        args=[*config.command, *config.args],
        env=[f"{e.key}={e.value}" for e in config.envs],
    )
    for m in config.mounts:
        if m.image:
            continue
        options = ["rbind", "ro" if m.readonly else "rw"]
        out.mounts.add(
            destination=m.container_path, type="bind", source=m.host_path, options=options
        )
    for r in config.rlimits:
        out.rlimits.add(type=r.type, soft=r.soft, hard=r.hard)
    out.linux.resources.CopyFrom(resources_message(config.resources))
    if config.resources.oom_score_adj:
        out.linux.oom_score_adj.value = config.resources.oom_score_adj
    for d in config.devices:
        out.linux.devices.add(path=d.container_path)
    if record is not None:
        out.state = _STATES[record.state]
        out.created_at = record.created_at
        out.started_at = record.started_at
        out.finished_at = record.finished_at
        out.exit_code = record.exit_code
        out.status_reason = record.reason
        out.status_message = record.message[:1024]
        out.pid = max(0, min(record.pid, 2**32 - 1))
    return out


def record_message(record: ContainerRecord) -> nri_pb2.Container:
    return container_message(record.id, record.sandbox_id, record.config, record)
