"""What a CRI request may hold: the limits vmcri enforces at its edge, each with its reason.

Every field of every request gets the generic limits below (strings, repeated fields,
maps, enums) without being named here; :data:`RULES` tightens or widens them for the
fields that carry meaning (IDs, paths, sizes, CPU and memory values). A rule is keyed
by the field's proto name without the package (``LinuxContainerResources.cpu_quota``),
so it applies wherever that message is used (a pod's resources, a container's, an
UpdateContainerResources). A field added to the proto later is covered by the generic
limits at once, and gets a rule here when its value means more than its type says.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmcri.cri import field_checks as c

# ---------------------------------------------------------------- generic limits

# Longest string or bytes value: a path (PATH_MAX) is the longest ordinary thing a
# client sends. Strings must also hold no NUL: nothing vmcri writes them to (argv,
# paths, resolv.conf, JSON records read by runc) can carry one.
MAX_STRING_BYTES = 4096
# Most items of a repeated field and entries of a map, unless a rule says otherwise.
MAX_ITEMS = 1024
# Largest argv word or environment string the kernel takes (MAX_ARG_STRLEN).
MAX_ARG_BYTES = 128 * 1024
# Most argv words and environment variables: far above kubelet's service-link
# variables (7 per Service of the namespace); the kernel's ARG_MAX bounds the total.
MAX_ARGS = 16384
# Annotations: Kubernetes bounds all of an object's annotations to 256 KiB together.
MAX_ANNOTATION_BYTES = 256 * 1024
# Label keys: a DNS subdomain prefix (253), '/', a name (63).
MAX_LABEL_KEY_BYTES = 317
# Names, namespaces and UIDs of pods and containers: a DNS subdomain at most.
MAX_NAME_BYTES = 253
# Registry credentials: identity tokens (JWTs) outgrow an ordinary string.
MAX_CREDENTIAL_BYTES = 64 * 1024

# ---------------------------------------------------------------- resources

# CFS bandwidth, in microseconds, as the kernel takes it (kernel/sched/core.c):
# the period from 1 ms to 1 s, the quota from 1 ms to 2^44-1 us, -1 for "no limit".
MIN_CPU_PERIOD_US = 1_000
MAX_CPU_PERIOD_US = 1_000_000
MIN_CPU_QUOTA_US = 1_000
MAX_CPU_QUOTA_US = (1 << 44) - 1
# cpu.shares (cgroup v1 units, which runc maps to cpu.weight): the kernel's 2..2^18.
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
# Memory and swap limits, bytes: x86-64 addresses at most 4 PiB (52 bits) of physical
# memory, so a larger limit cannot mean anything. What this host or a VM can really
# give is the backend's to check (the VM backend refuses more than MemTotal).
MAX_MEMORY_BYTES = 1 << 52
# The smallest memory limit: below it runc's own init cannot run in the cgroup and a
# live container is already over it, so runc fails with no field named. CRI-O refuses
# the same (12 MiB); found by the fuzz tier (UpdateContainerResources, 1 byte).
MIN_MEMORY_BYTES = 12 * 1024 * 1024
# oom_score_adj: the kernel's range.
MIN_OOM_SCORE_ADJ = -1000
MAX_OOM_SCORE_ADJ = 1000
# cpuset indices: the kernel's NR_CPUS and MAX_NUMNODES at their largest (x86-64).
MAX_CPU_INDEX = 8191
MAX_NUMA_NODE = 1023

# ---------------------------------------------------------------- identities and times

# uids and gids: 0..2^32-2 (2^32-1 is the kernel's "no ID").
MAX_UNIX_ID = (1 << 32) - 2
# Supplementary groups: the kernel's NGROUPS_MAX.
MAX_SUPPLEMENTAL_GROUPS = 65536
# StopContainer grace periods, seconds: Kubernetes puts no bound on
# terminationGracePeriodSeconds; 68 years is far beyond any use and below every clock limit.
MAX_STOP_TIMEOUT_S = (1 << 31) - 1
# ExecSync time-out, seconds: a day, far beyond any probe (kubelet's default is 1 s).
MAX_EXEC_TIMEOUT_S = 24 * 3600
MAX_PORT = 65535
# Runtime-specific options of CheckpointPod and RestorePod: vmcri knows none yet (and
# refuses unknown ones by name), so a handful is already more than any use.
MAX_CHECKPOINT_OPTIONS = 16


@dataclass(frozen=True)
class Rule:
    """How one field is checked beyond its type; None keeps the generic limit."""

    max_bytes: int | None = None  # strings and bytes
    max_items: int | None = None  # repeated fields and maps
    check: c.Check | None = None  # each value (each item of a repeated field)
    required: bool = False  # a scalar that must be set (proto3 cannot say so itself)


_ID = Rule(check=c.lookup_id)
# The four teardown RPCs are idempotent (CRI: "must not return an error if ... already
# removed"), so an ID of any shape that names nothing is success, as it is in containerd
# (a NotFound there is success); the runtime looks nothing up and builds nothing from one
# that cannot be an ID (vmcri.ids.could_name). The generic limits still bound it (4 KiB,
# no NUL). An empty ID is no ID at all but a request without its one field: refused, as
# containerd ("prefix can't be empty") and CRI-O ("PodSandboxId should not be empty") do,
# since as a prefix it would match every record.
_TEARDOWN_ID = Rule(required=True)
_ID_PREFIX = Rule(check=c.id_prefix)
_ABSOLUTE = Rule(check=c.absolute_path)
_REQUIRED_ABSOLUTE = Rule(check=c.absolute_path, required=True)
_NAME = Rule(max_bytes=MAX_NAME_BYTES, check=c.word)
_UNIX_ID = Rule(check=c.in_range(0, MAX_UNIX_ID))
_ARGV = Rule(max_bytes=MAX_ARG_BYTES, max_items=MAX_ARGS)
_LABEL_KEY = Rule(max_bytes=MAX_LABEL_KEY_BYTES)
_ANNOTATION_VALUE = Rule(max_bytes=MAX_ANNOTATION_BYTES)
_CREDENTIAL = Rule(max_bytes=MAX_CREDENTIAL_BYTES)
_BYTES = Rule(check=c.in_range(0, MAX_MEMORY_BYTES))

RULES: dict[str, Rule] = {
    "StopPodSandboxRequest.pod_sandbox_id": _TEARDOWN_ID,
    "RemovePodSandboxRequest.pod_sandbox_id": _TEARDOWN_ID,
    "StopContainerRequest.container_id": _TEARDOWN_ID,
    "RemoveContainerRequest.container_id": _TEARDOWN_ID,
    # IDs vmcri gave out (or a prefix of one, as the store resolves); filters match on a prefix.
    "PodSandboxStatusRequest.pod_sandbox_id": _ID,
    "UpdatePodSandboxResourcesRequest.pod_sandbox_id": _ID,
    "CreateContainerRequest.pod_sandbox_id": _ID,
    "PortForwardRequest.pod_sandbox_id": _ID,
    "PodSandboxStatsRequest.pod_sandbox_id": _ID,
    "CheckpointPodRequest.pod_sandbox_id": _ID,
    "StartContainerRequest.container_id": _ID,
    "ContainerStatusRequest.container_id": _ID,
    "UpdateContainerResourcesRequest.container_id": _ID,
    "ReopenContainerLogRequest.container_id": _ID,
    "ExecSyncRequest.container_id": _ID,
    "ExecRequest.container_id": _ID,
    "AttachRequest.container_id": _ID,
    "ContainerStatsRequest.container_id": _ID,
    "CheckpointContainerRequest.container_id": _ID,
    # Checkpoints: directories and archives the kubelet owns, opened by the daemon as root
    # (vmcri.checkpoint.paths checks what a path names; here only its shape).
    "CheckpointPodRequest.path": _REQUIRED_ABSOLUTE,
    "RestorePodRequest.path": _REQUIRED_ABSOLUTE,
    "CheckpointContainerRequest.location": _REQUIRED_ABSOLUTE,
    "CheckpointContainerRequest.timeout": Rule(check=c.in_range(0, MAX_STOP_TIMEOUT_S)),
    "CheckpointPodRequest.options": Rule(max_items=MAX_CHECKPOINT_OPTIONS),
    "RestorePodRequest.options": Rule(max_items=MAX_CHECKPOINT_OPTIONS),
    "NamespaceOption.target_id": _ID_PREFIX,
    "PodSandboxFilter.id": _ID_PREFIX,
    "ContainerFilter.id": _ID_PREFIX,
    "ContainerFilter.pod_sandbox_id": _ID_PREFIX,
    "ContainerStatsFilter.id": _ID_PREFIX,
    "ContainerStatsFilter.pod_sandbox_id": _ID_PREFIX,
    "PodSandboxStatsFilter.id": _ID_PREFIX,
    # Names end up in records, the guest's host name and metrics labels.
    "PodSandboxMetadata.name": _NAME,
    "PodSandboxMetadata.uid": _NAME,
    "PodSandboxMetadata.namespace": _NAME,
    "ContainerMetadata.name": _NAME,
    # Pod files: each value becomes a line of /etc/hostname, /etc/hosts or resolv.conf.
    "PodSandboxConfig.hostname": Rule(max_bytes=64, check=c.hostname),
    "PodSandboxConfig.log_directory": _ABSOLUTE,
    "DNSConfig.servers": Rule(max_items=32, check=c.ip_address),
    "DNSConfig.searches": Rule(max_bytes=253, max_items=32, check=c.word),
    "DNSConfig.options": Rule(max_bytes=256, max_items=32, check=c.word),
    "PortMapping.container_port": Rule(check=c.in_range(1, MAX_PORT)),
    "PortMapping.host_port": Rule(check=c.in_range(1, MAX_PORT)),
    "PortMapping.host_ip": Rule(check=c.ip_address),
    "LinuxPodSandboxConfig.cgroup_parent": Rule(check=c.no_parent_refs),
    "PortForwardRequest.port": Rule(max_items=64, check=c.in_range(1, MAX_PORT)),
    "NetworkConfig.pod_cidr": Rule(check=c.cidr_list),
    # Resources, as the kernel takes them.
    "LinuxContainerResources.cpu_period": Rule(
        check=c.in_range(MIN_CPU_PERIOD_US, MAX_CPU_PERIOD_US)
    ),
    "LinuxContainerResources.cpu_quota": Rule(
        check=c.in_range(MIN_CPU_QUOTA_US, MAX_CPU_QUOTA_US, also=(-1,))
    ),
    "LinuxContainerResources.cpu_shares": Rule(check=c.in_range(MIN_CPU_SHARES, MAX_CPU_SHARES)),
    "LinuxContainerResources.memory_limit_in_bytes": Rule(
        check=c.in_range(MIN_MEMORY_BYTES, MAX_MEMORY_BYTES)
    ),
    "LinuxContainerResources.memory_swap_limit_in_bytes": Rule(
        check=c.in_range(0, MAX_MEMORY_BYTES, also=(-1,))
    ),
    "LinuxContainerResources.oom_score_adj": Rule(
        check=c.in_range(MIN_OOM_SCORE_ADJ, MAX_OOM_SCORE_ADJ)
    ),
    "LinuxContainerResources.cpuset_cpus": Rule(check=c.cpuset(MAX_CPU_INDEX)),
    "LinuxContainerResources.cpuset_mems": Rule(check=c.cpuset(MAX_NUMA_NODE)),
    "LinuxContainerResources.UnifiedEntry.key": Rule(max_bytes=64, check=c.cgroup_file),
    "LinuxContainerResources.hugepage_limits": Rule(max_items=8),
    "HugepageLimit.page_size": Rule(max_bytes=16, check=c.page_size),
    "HugepageLimit.limit": _BYTES,
    # Identities.
    "Int64Value.value": _UNIX_ID,  # run_as_user and run_as_group, the only Int64Values sent
    "LinuxSandboxSecurityContext.supplemental_groups": Rule(
        max_items=MAX_SUPPLEMENTAL_GROUPS, check=c.in_range(0, MAX_UNIX_ID)
    ),
    "LinuxContainerSecurityContext.supplemental_groups": Rule(
        max_items=MAX_SUPPLEMENTAL_GROUPS, check=c.in_range(0, MAX_UNIX_ID)
    ),
    "LinuxContainerSecurityContext.masked_paths": _ABSOLUTE,
    "LinuxContainerSecurityContext.readonly_paths": _ABSOLUTE,
    "Capability.add_capabilities": Rule(max_items=64, check=c.capability),
    "Capability.drop_capabilities": Rule(max_items=64, check=c.capability),
    "Capability.add_ambient_capabilities": Rule(max_items=64, check=c.capability),
    # The container's process.
    "ContainerConfig.command": _ARGV,
    "ContainerConfig.args": _ARGV,
    "ContainerConfig.envs": Rule(max_items=MAX_ARGS),
    "KeyValue.key": Rule(max_bytes=MAX_ARG_BYTES, check=c.env_key),
    "KeyValue.value": Rule(max_bytes=MAX_ARG_BYTES),
    "ContainerConfig.working_dir": _ABSOLUTE,
    "ContainerConfig.log_path": Rule(check=c.relative_path),
    "ExecSyncRequest.cmd": _ARGV,
    "ExecSyncRequest.timeout": Rule(check=c.in_range(0, MAX_EXEC_TIMEOUT_S)),
    "ExecRequest.cmd": _ARGV,
    "StopContainerRequest.timeout": Rule(check=c.in_range(0, MAX_STOP_TIMEOUT_S)),
    # Mounts and devices: host paths are opened by the daemon, container paths by runc.
    "Mount.container_path": _ABSOLUTE,
    "Mount.host_path": _ABSOLUTE,
    "Mount.image_sub_path": Rule(check=c.relative_path),
    "Mount.mount_options": Rule(max_items=64),
    "Device.container_path": _ABSOLUTE,
    "Device.host_path": _ABSOLUTE,
    "Device.permissions": Rule(check=c.device_permissions),
    # Labels and annotations of every message that has them.
    "PodSandboxConfig.LabelsEntry.key": _LABEL_KEY,
    "PodSandboxConfig.AnnotationsEntry.value": _ANNOTATION_VALUE,
    "ContainerConfig.LabelsEntry.key": _LABEL_KEY,
    "ContainerConfig.AnnotationsEntry.value": _ANNOTATION_VALUE,
    "UpdateContainerResourcesRequest.AnnotationsEntry.value": _ANNOTATION_VALUE,
    # Credentials.
    "AuthConfig.password": _CREDENTIAL,
    "AuthConfig.auth": _CREDENTIAL,
    "AuthConfig.identity_token": _CREDENTIAL,
    "AuthConfig.registry_token": _CREDENTIAL,
}
