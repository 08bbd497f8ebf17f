"""Conversion between CRI wire messages and vmcri's domain types, both directions.

Only this module and the servicers import ``api_pb2``; everything behind them
sees ``vmcri.model`` dataclasses and store records.
"""

from __future__ import annotations

import signal
from typing import Any

from vmcri.api import api_pb2 as pb
from vmcri.errors import InvalidArgument
from vmcri.model import (
    Capabilities,
    ContainerConfig,
    ContainerSecurity,
    Device,
    DNSConfig,
    IDMapping,
    KeyValue,
    Metadata,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
    PortMapping,
    Protocol,
    Resources,
    SecurityProfile,
)
from vmcri.runtime.containers import ContainerFilter
from vmcri.runtime.cri_metric_families import MetricDescriptor, NetworkDescriptor
from vmcri.runtime.cri_metrics import MetricSample, PodMetrics
from vmcri.runtime.pods import SandboxFilter
from vmcri.runtime.usage_bounds import saturating_sum
from vmcri.store.records import (
    ContainerRecord,
    ContainerState,
    RunAsUser,
    SandboxRecord,
    SandboxState,
)
from vmcri.supervisor.api import ContainerUsage

# ---------------------------------------------------------------- wire -> domain


def _enum(enum_cls: Any, value: int, field: str) -> Any:
    try:
        return enum_cls(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: unknown value {value}") from exc


def metadata(msg: Any, field: str) -> Metadata:
    if msg is None or not msg.name:
        raise InvalidArgument(f"{field}.name: must not be empty")
    if msg.attempt < 0:
        raise InvalidArgument(f"{field}.attempt: must not be negative")
    uid = getattr(msg, "uid", "")
    namespace = getattr(msg, "namespace", "")
    return Metadata(name=msg.name, uid=uid, namespace=namespace, attempt=msg.attempt)


def _namespace_options(msg: pb.NamespaceOption, field: str) -> NamespaceOptions:
    userns = msg.userns_options
    return NamespaceOptions(
        network=_enum(NamespaceMode, msg.network, f"{field}.network"),
        pid=_enum(NamespaceMode, msg.pid, f"{field}.pid"),
        ipc=_enum(NamespaceMode, msg.ipc, f"{field}.ipc"),
        target_id=msg.target_id,
        userns_mode=_enum(NamespaceMode, userns.mode, f"{field}.userns_options.mode")
        if msg.HasField("userns_options")
        else NamespaceMode.NODE,
        uid_mappings=tuple(IDMapping(m.host_id, m.container_id, m.length) for m in userns.uids),
        gid_mappings=tuple(IDMapping(m.host_id, m.container_id, m.length) for m in userns.gids),
    )


def _seccomp(
    sec: pb.LinuxSandboxSecurityContext | pb.LinuxContainerSecurityContext, parent: str
) -> SecurityProfile:
    """The seccomp profile of a security context (pod or container), as containerd reads it.

    A ``seccomp`` message that is set wins, even empty: its zero value is
    RuntimeDefault. Without one, the deprecated ``seccomp_profile_path`` string
    decides; with neither, the container runs unconfined (the CRI default).
    """
    field = f"{parent}.seccomp"
    if sec.HasField("seccomp"):
        msg = sec.seccomp
        if msg.profile_type not in (0, 1, 2):
            raise InvalidArgument(f"{field}.profile_type: unknown value {msg.profile_type}")
        if msg.localhost_ref and msg.profile_type != 2:
            raise InvalidArgument(
                f"{field}.localhost_ref: may only be set when profile_type is Localhost"
            )
        return SecurityProfile(kind=msg.profile_type, localhost_ref=msg.localhost_ref)
    # The deprecated string form: "runtime/default", "unconfined", "localhost/<path>".
    legacy = sec.seccomp_profile_path
    if legacy in ("", "unconfined"):
        return SecurityProfile(kind=1)
    if legacy in ("runtime/default", "docker/default"):
        return SecurityProfile(kind=0)
    if legacy.startswith("localhost/"):
        return SecurityProfile(kind=2, localhost_ref=legacy.removeprefix("localhost/"))
    raise InvalidArgument(f"{parent}.seccomp_profile_path: unknown profile {legacy!r}")


def resources(msg: pb.LinuxContainerResources) -> Resources:
    return Resources(
        cpu_period=msg.cpu_period,
        cpu_quota=msg.cpu_quota,
        cpu_shares=msg.cpu_shares,
        memory_limit_in_bytes=msg.memory_limit_in_bytes,
        oom_score_adj=msg.oom_score_adj,
        cpuset_cpus=msg.cpuset_cpus,
        cpuset_mems=msg.cpuset_mems,
        memory_swap_limit_in_bytes=msg.memory_swap_limit_in_bytes,
        unified=tuple(sorted(msg.unified.items())),
        hugepage_limits=tuple((h.page_size, h.limit) for h in msg.hugepage_limits),
    )


def pod_config(msg: pb.PodSandboxConfig) -> PodConfig:
    """Raises InvalidArgument naming the field."""
    if not msg.HasField("metadata"):
        raise InvalidArgument("config.metadata: must be set")
    linux = msg.linux
    sec = linux.security_context
    pod_sec = PodSecurity(
        namespace_options=_namespace_options(
            sec.namespace_options, "config.linux.security_context.namespace_options"
        ),
        run_as_user=sec.run_as_user.value if sec.HasField("run_as_user") else None,
        run_as_group=sec.run_as_group.value if sec.HasField("run_as_group") else None,
        readonly_rootfs=sec.readonly_rootfs,
        supplemental_groups=tuple(sec.supplemental_groups),
        privileged=sec.privileged,
        seccomp=_seccomp(sec, "config.linux.security_context"),
        supplemental_groups_policy=sec.supplemental_groups_policy,
    )
    return PodConfig(
        metadata=metadata(msg.metadata, "config.metadata"),
        hostname=msg.hostname,
        log_directory=msg.log_directory,
        dns=DNSConfig(
            servers=tuple(msg.dns_config.servers),
            searches=tuple(msg.dns_config.searches),
            options=tuple(msg.dns_config.options),
        ),
        port_mappings=tuple(
            PortMapping(
                protocol=_enum(Protocol, p.protocol, f"config.port_mappings[{i}].protocol"),
                container_port=p.container_port,
                host_port=p.host_port,
                host_ip=p.host_ip,
            )
            for i, p in enumerate(msg.port_mappings)
        ),
        labels=dict(msg.labels),
        annotations=dict(msg.annotations),
        cgroup_parent=linux.cgroup_parent,
        security=pod_sec,
        sysctls=dict(linux.sysctls),
        overhead=resources(linux.overhead),
        resources=resources(linux.resources),
    )


def container_config(msg: pb.ContainerConfig) -> ContainerConfig:
    """Raises InvalidArgument naming the field."""
    if not msg.HasField("metadata"):
        raise InvalidArgument("config.metadata: must be set")
    linux = msg.linux
    sec = linux.security_context
    caps = sec.capabilities
    container_sec = ContainerSecurity(
        capabilities=Capabilities(
            add=tuple(caps.add_capabilities),
            drop=tuple(caps.drop_capabilities),
            add_ambient=tuple(caps.add_ambient_capabilities),
        ),
        privileged=sec.privileged,
        namespace_options=_namespace_options(
            sec.namespace_options, "config.linux.security_context.namespace_options"
        ),
        run_as_user=sec.run_as_user.value if sec.HasField("run_as_user") else None,
        run_as_group=sec.run_as_group.value if sec.HasField("run_as_group") else None,
        run_as_username=sec.run_as_username,
        readonly_rootfs=sec.readonly_rootfs,
        supplemental_groups=tuple(sec.supplemental_groups),
        supplemental_groups_policy=sec.supplemental_groups_policy,
        no_new_privs=sec.no_new_privs,
        masked_paths=tuple(sec.masked_paths) if sec.masked_paths else None,
        readonly_paths=tuple(sec.readonly_paths) if sec.readonly_paths else None,
        seccomp=_seccomp(sec, "config.linux.security_context"),
    )
    return ContainerConfig(
        metadata=metadata(msg.metadata, "config.metadata"),
        image=msg.image.image,
        command=tuple(msg.command),
        args=tuple(msg.args),
        working_dir=msg.working_dir,
        envs=tuple(KeyValue(e.key, _env_value(e.value, i)) for i, e in enumerate(msg.envs)),
        mounts=tuple(_mount(m, i) for i, m in enumerate(msg.mounts)),
        devices=tuple(
            Device(d.container_path, d.host_path, d.permissions or "rwm") for d in msg.devices
        ),
        labels=dict(msg.labels),
        annotations=dict(msg.annotations),
        log_path=msg.log_path,
        stdin=msg.stdin,
        stdin_once=msg.stdin_once,
        tty=msg.tty,
        resources=resources(linux.resources),
        security=container_sec,
        stop_signal=_signal_name(msg.stop_signal),
    )


def _env_value(value: bytes | str, i: int) -> str:
    # Newer cri-api carries env values as bytes (same wire type as string).
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"config.envs[{i}].value: not valid UTF-8") from exc


def _signal_name(value: int) -> str:
    """ "SIGTERM" for the CRI Signal enum value; "" when unset."""
    if not value:
        return ""
    try:
        return pb.Signal.Name(value).removeprefix("SIGNAL_")  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidArgument(f"config.stop_signal: unknown value {value}") from exc


def _mount(m: pb.Mount, i: int) -> Mount:
    return Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        selinux_relabel=m.selinux_relabel,
        propagation=_enum(MountPropagation, m.propagation, f"config.mounts[{i}].propagation"),
        recursive_read_only=m.recursive_read_only,
        image=m.image.image if m.HasField("image") else "",
        image_sub_path=m.image_sub_path,
    )


def sandbox_filter(msg: pb.PodSandboxFilter) -> SandboxFilter:
    return SandboxFilter(
        id=msg.id,
        state=_SANDBOX_STATE_FROM_PB[msg.state.state] if msg.HasField("state") else None,
        labels=tuple(msg.label_selector.items()),
    )


def container_filter(msg: pb.ContainerFilter) -> ContainerFilter:
    return ContainerFilter(
        id=msg.id,
        state=_CONTAINER_STATE_FROM_PB[msg.state.state] if msg.HasField("state") else None,
        sandbox_id=msg.pod_sandbox_id,
        labels=tuple(msg.label_selector.items()),
    )


# ---------------------------------------------------------------- domain -> wire

_SANDBOX_STATE_TO_PB = {
    SandboxState.CREATING: pb.SANDBOX_NOTREADY,
    SandboxState.READY: pb.SANDBOX_READY,
    SandboxState.NOTREADY: pb.SANDBOX_NOTREADY,
}
_SANDBOX_STATE_FROM_PB = {
    pb.SANDBOX_READY: SandboxState.READY,
    pb.SANDBOX_NOTREADY: SandboxState.NOTREADY,
}
_CONTAINER_STATE_TO_PB = {
    ContainerState.CREATED: pb.CONTAINER_CREATED,
    ContainerState.RUNNING: pb.CONTAINER_RUNNING,
    ContainerState.EXITED: pb.CONTAINER_EXITED,
    ContainerState.UNKNOWN: pb.CONTAINER_UNKNOWN,
}
_CONTAINER_STATE_FROM_PB = {v: k for k, v in _CONTAINER_STATE_TO_PB.items()}


def _pod_metadata(m: Metadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def _container_metadata(m: Metadata) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=m.name, attempt=m.attempt)


def pod_sandbox(record: SandboxRecord) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=record.id,
        metadata=_pod_metadata(record.config.metadata),
        state=_SANDBOX_STATE_TO_PB[record.state],  # type: ignore[arg-type]
        created_at=record.created_at,
        labels=record.config.labels,
        annotations=record.config.annotations,
        runtime_handler=record.handler,
    )


def pod_sandbox_status(record: SandboxRecord) -> pb.PodSandboxStatus:
    ns = record.config.security.namespace_options
    return pb.PodSandboxStatus(
        id=record.id,
        metadata=_pod_metadata(record.config.metadata),
        state=_SANDBOX_STATE_TO_PB[record.state],  # type: ignore[arg-type]
        created_at=record.created_at,
        network=pb.PodSandboxNetworkStatus(
            ip=record.ip,
            additional_ips=[pb.PodIP(ip=ip) for ip in record.additional_ips],
        ),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(
                options=pb.NamespaceOption(
                    network=ns.network.value,  # type: ignore[arg-type]
                    pid=ns.pid.value,  # type: ignore[arg-type]
                    ipc=ns.ipc.value,  # type: ignore[arg-type]
                    target_id=ns.target_id,
                )
            )
        ),
        labels=record.config.labels,
        annotations=record.config.annotations,
        runtime_handler=record.handler,
    )


def container(record: ContainerRecord) -> pb.Container:
    return pb.Container(
        id=record.id,
        pod_sandbox_id=record.sandbox_id,
        metadata=_container_metadata(record.config.metadata),
        image=pb.ImageSpec(image=record.config.image, user_specified_image=record.config.image),
        image_ref=record.image_id,
        state=_CONTAINER_STATE_TO_PB[record.state],  # type: ignore[arg-type]
        created_at=record.created_at,
        labels=record.config.labels,
        annotations=record.config.annotations,
        image_id=record.image_id,
    )


def _mount_pb(m: Mount, image_ref: str = "") -> pb.Mount:
    """The mount as ContainerStatus reports it; an image volume with the digest it resolved to."""
    return pb.Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        selinux_relabel=m.selinux_relabel,
        propagation=m.propagation.value,  # type: ignore[arg-type]
        recursive_read_only=m.recursive_read_only,
        image=pb.ImageSpec(image=m.image, image_ref=image_ref) if m.image else None,
        image_sub_path=m.image_sub_path,
    )


def resources_pb(r: Resources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
        unified=dict(r.unified),
        hugepage_limits=[pb.HugepageLimit(page_size=p, limit=n) for p, n in r.hugepage_limits],
    )


def _image_refs(record: ContainerRecord) -> dict[int, str]:
    """Mount index -> the config digest of the image it mounts."""
    return {volume.mount_index: volume.image_id for volume in record.image_volumes}


def container_status(record: ContainerRecord) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        id=record.id,
        metadata=_container_metadata(record.config.metadata),
        state=_CONTAINER_STATE_TO_PB[record.state],  # type: ignore[arg-type]
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.exit_code,
        image=pb.ImageSpec(image=record.config.image, user_specified_image=record.config.image),
        image_ref=record.image_id,
        reason=record.reason,
        message=record.message,
        labels=record.config.labels,
        annotations=record.config.annotations,
        mounts=[
            _mount_pb(m, _image_refs(record).get(i, "")) for i, m in enumerate(record.config.mounts)
        ],
        log_path=record.log_path,
        resources=pb.ContainerResources(linux=resources_pb(record.config.resources)),
        image_id=record.image_id,
        user=container_user(record.user),
        # Records written before the runtime kept stop_signal still have the backend's copy.
        stop_signal=_signal_pb(  # type: ignore[arg-type]
            record.stop_signal or record.runtime.get("stop_signal", "")
        ),
    )


def container_stats(record: ContainerRecord, usage: ContainerUsage | None) -> pb.ContainerStats:
    attributes = pb.ContainerAttributes(
        id=record.id,
        metadata=_container_metadata(record.config.metadata),
        labels=record.config.labels,
        annotations=record.config.annotations,
    )
    if usage is None:
        return pb.ContainerStats(attributes=attributes)
    ts = usage.timestamp
    return pb.ContainerStats(
        attributes=attributes,
        cpu=pb.CpuUsage(
            timestamp=ts,
            usage_core_nano_seconds=pb.UInt64Value(value=usage.cpu_usage_core_nano_seconds),
        ),
        memory=pb.MemoryUsage(
            timestamp=ts,
            working_set_bytes=pb.UInt64Value(value=usage.memory_working_set_bytes),
            usage_bytes=pb.UInt64Value(value=usage.memory_usage_bytes),
            rss_bytes=pb.UInt64Value(value=usage.memory_rss_bytes),
        ),
        writable_layer=pb.FilesystemUsage(
            timestamp=ts,
            used_bytes=pb.UInt64Value(value=usage.writable_layer_bytes),
            inodes_used=pb.UInt64Value(value=usage.writable_layer_inodes),
        ),
    )


def pod_sandbox_stats(
    record: SandboxRecord, containers: list[tuple[ContainerRecord, ContainerUsage | None]]
) -> pb.PodSandboxStats:
    """Pod stats as the sum of its running containers' samples, saturating at 2^64-1."""
    stats = [container_stats(c, u) for c, u in containers]
    samples = [u for _, u in containers if u is not None]
    ts = max((u.timestamp for u in samples), default=0)
    attributes = pb.PodSandboxAttributes(
        id=record.id,
        metadata=_pod_metadata(record.config.metadata),
        labels=record.config.labels,
        annotations=record.config.annotations,
    )
    linux = pb.LinuxPodSandboxStats(containers=stats)
    if samples:
        linux.cpu.CopyFrom(
            pb.CpuUsage(
                timestamp=ts,
                usage_core_nano_seconds=pb.UInt64Value(
                    value=saturating_sum(u.cpu_usage_core_nano_seconds for u in samples)
                ),
            )
        )
        linux.memory.CopyFrom(
            pb.MemoryUsage(
                timestamp=ts,
                working_set_bytes=pb.UInt64Value(
                    value=saturating_sum(u.memory_working_set_bytes for u in samples)
                ),
                usage_bytes=pb.UInt64Value(
                    value=saturating_sum(u.memory_usage_bytes for u in samples)
                ),
                rss_bytes=pb.UInt64Value(value=saturating_sum(u.memory_rss_bytes for u in samples)),
            )
        )
        linux.process.CopyFrom(
            pb.ProcessUsage(
                timestamp=ts,
                process_count=pb.UInt64Value(
                    value=saturating_sum(u.process_count for u in samples)
                ),
            )
        )
    return pb.PodSandboxStats(attributes=attributes, linux=linux)


def _signal_pb(name: str) -> int:
    """The CRI Signal enum value of "SIGTERM", "TERM", "15" or "SIGRTMIN+3"; 0 if unknown."""
    if not name:
        return 0
    if name.isdigit():
        try:
            name = signal.Signals(int(name)).name
        except ValueError:
            return 0
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    name = name.replace("+", "PLUS").replace("-", "MINUS")
    try:
        return int(pb.Signal.Value("SIGNAL_" + name))
    except ValueError:
        return 0


def container_user(user: RunAsUser | None) -> pb.ContainerUser | None:
    if user is None:
        return None
    return pb.ContainerUser(
        linux=pb.LinuxContainerUser(
            uid=user.uid, gid=user.gid, supplemental_groups=list(user.supplemental_groups)
        )
    )


def metric_descriptor(d: MetricDescriptor | NetworkDescriptor) -> pb.MetricDescriptor:
    return pb.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys))


def _metric(s: MetricSample) -> pb.Metric:
    return pb.Metric(
        name=s.name,
        timestamp=s.timestamp,
        metric_type=s.kind.value,  # type: ignore[arg-type]
        label_values=list(s.label_values),
        value=pb.UInt64Value(value=s.value),
    )


def pod_sandbox_metrics(m: PodMetrics) -> pb.PodSandboxMetrics:
    return pb.PodSandboxMetrics(
        pod_sandbox_id=m.sandbox_id,
        metrics=[_metric(s) for s in m.samples],
        container_metrics=[
            pb.ContainerMetrics(
                container_id=c.container_id, metrics=[_metric(s) for s in c.samples]
            )
            for c in m.containers
        ],
    )
