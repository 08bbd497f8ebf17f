"""Domain types of pods and containers, free of wire types.

``vmcri.cri.convert`` builds these from CRI messages; handlers, the OCI spec
generator and the state store use only these. They are plain frozen dataclasses
and serialise to JSON through :mod:`vmcri.store.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class NamespaceMode(Enum):
    """Where a namespace comes from (CRI NamespaceMode)."""

    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class MountPropagation(Enum):
    PRIVATE = 0
    HOST_TO_CONTAINER = 1  # rslave
    BIDIRECTIONAL = 2  # rshared


class Protocol(Enum):
    TCP = 0
    UDP = 1
    SCTP = 2


@dataclass(frozen=True)
class Metadata:
    name: str
    uid: str = ""
    namespace: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class DNSConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    protocol: Protocol = Protocol.TCP
    container_port: int = 0
    host_port: int = 0
    host_ip: str = ""


@dataclass(frozen=True)
class IDMapping:
    host_id: int
    container_id: int
    length: int


@dataclass(frozen=True)
class NamespaceOptions:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    userns_mode: NamespaceMode = NamespaceMode.NODE
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()


@dataclass(frozen=True)
class SecurityProfile:
    """Seccomp or AppArmor profile: RuntimeDefault=0, Unconfined=1, Localhost=2."""

    kind: int = 1
    localhost_ref: str = ""


@dataclass(frozen=True)
class Resources:
    """Linux resources of a container or a pod (0 means unset)."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory_swap_limit_in_bytes: int = 0
    unified: tuple[tuple[str, str], ...] = ()
    hugepage_limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class PodSecurity:
    namespace_options: NamespaceOptions = field(default_factory=NamespaceOptions)
    run_as_user: int | None = None
    run_as_group: int | None = None
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    privileged: bool = False
    seccomp: SecurityProfile = field(default_factory=SecurityProfile)
    supplemental_groups_policy: int = 0  # 0 Merge, 1 Strict


@dataclass(frozen=True)
class PodConfig:
    """What RunPodSandbox asked for."""

    metadata: Metadata
    hostname: str = ""
    log_directory: str = ""
    dns: DNSConfig = field(default_factory=DNSConfig)
    port_mappings: tuple[PortMapping, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    security: PodSecurity = field(default_factory=PodSecurity)
    sysctls: dict[str, str] = field(default_factory=dict)
    overhead: Resources = field(default_factory=Resources)
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str = ""
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: MountPropagation = MountPropagation.PRIVATE
    recursive_read_only: bool = False
    image: str = ""  # image volume: the image reference or ID mounted here
    image_sub_path: str = ""


@dataclass(frozen=True)
class Device:
    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class Capabilities:
    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    add_ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerSecurity:
    capabilities: Capabilities = field(default_factory=Capabilities)
    privileged: bool = False
    namespace_options: NamespaceOptions = field(default_factory=NamespaceOptions)
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    supplemental_groups_policy: int = 0  # 0 Merge, 1 Strict
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] | None = None  # None: the runtime's defaults
    readonly_paths: tuple[str, ...] | None = None
    seccomp: SecurityProfile = field(default_factory=SecurityProfile)


@dataclass(frozen=True)
class Rlimit:
    """A POSIX resource limit of a container's process (the runtime's own, or an NRI plugin's)."""

    type: str  # "RLIMIT_NOFILE", ...
    soft: int
    hard: int


@dataclass(frozen=True)
class OciHook:
    """An OCI hook (set by NRI plugins): a host binary the runtime runs at ``stage``."""

    stage: str  # "prestart", "createRuntime", "createContainer", "startContainer", ...
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class ContainerConfig:
    """What CreateContainer asked for."""

    metadata: Metadata
    image: str  # the image as the client named it
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[KeyValue, ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""  # relative to the pod's log_directory
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: Resources = field(default_factory=Resources)
    security: ContainerSecurity = field(default_factory=ContainerSecurity)
    stop_signal: str = ""  # from the CRI config; the image's StopSignal applies otherwise
    # Only NRI plugins set these (vmcri.nri.adjust); the CRI has no field for them.
    rlimits: tuple[Rlimit, ...] = ()  # over the runtime's own limits, type by type
    hooks: tuple[OciHook, ...] = ()


@dataclass(frozen=True)
class Condition:
    """A runtime condition for CRI Status (RuntimeReady, NetworkReady, or a warning)."""

    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ImageInfo:
    """What a backend needs of the container's image."""

    id: str  # config digest
    name: str  # normalised reference
    layer_dirs: tuple[str, ...]  # unpacked layer directories, lowest first
    config: dict[str, object]  # the OCI image config's "config" object (Env, Cmd, ...)
