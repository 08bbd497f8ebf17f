"""Host facts the pure spec builder needs (:class:`SpecContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmcri.model import Rlimit


@dataclass(frozen=True)
class ResolvedUser:
    """The numeric identity a container process runs as."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()  # from the rootfs /etc/group (Merge policy only)


@dataclass(frozen=True)
class ResolvedDevice:
    """A host device node, stat()ed by :func:`vmcri.oci.hostpaths.resolve_devices`."""

    container_path: str
    host_path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int  # permission bits of the node
    permissions: str = "rwm"  # cgroup access: a subset of "rwm"
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class SpecContext:
    """Facts of the place the container runs, in that place's terms (host or guest).

    Namespace paths are files the runtime joins; an empty path means the pod
    has no such namespace (e.g. ``pid_ns_path`` when the pod does not share one).
    """

    rootfs: str  # absolute path of the container's root filesystem
    cgroups_path: str = ""  # linux.cgroupsPath; empty lets the runtime choose
    net_ns_path: str = ""
    ipc_ns_path: str = ""
    uts_ns_path: str = ""
    pid_ns_path: str = ""  # the pod's shared PID namespace, if it has one
    user_ns_path: str = ""  # the pod's user namespace, when it has one (userns mode POD)
    # No pod user namespace to join: the runtime makes each container's from the spec's
    # mappings (a VM pod's guest), after joining the pod's other namespaces, which the
    # runtime's own user namespace owns (``vmcri.oci.own_userns``).
    own_userns: bool = False
    target_pid_ns_path: str = ""  # namespace_options.target_id resolved by the caller
    hostname: str = ""
    hostname_path: str = ""  # pod files bind-mounted at /etc/hostname, /etc/hosts, ...
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str = ""  # the pod's /dev/shm (a tmpfs) when IPC is shared in the pod
    user: ResolvedUser = field(default_factory=ResolvedUser)
    devices: tuple[ResolvedDevice, ...] = ()  # the container's devices, resolved
    host_devices: tuple[ResolvedDevice, ...] = ()  # every host device, for privileged
    image_volume_paths: dict[str, str] = field(default_factory=dict)  # image ref -> rootfs
    seccomp_localhost: dict[str, object] | None = None  # the loaded localhost profile
    # Capabilities the runtime can grant (the host's bounding set); None: every known one.
    available_capabilities: tuple[str, ...] | None = None
    # Lowest oom_score_adj the runtime may set. On hosts where even root lacks
    # CAP_SYS_RESOURCE, a process cannot go below its own value, so requests
    # under it are raised to it instead of failing the start. None: no floor.
    min_oom_score_adj: int | None = None
    recursive_read_only_supported: bool = True  # "rro" needs mount_setattr (Linux >= 5.12)
    cgroup_namespace: bool = False  # give the container its own cgroup namespace (v2 hosts)
    pids_limit: int = 0  # 0: no limit
    rlimits: tuple[Rlimit, ...] = ()  # empty: inherit the runtime's limits
    in_vm: bool = False  # the spec is for a runtime inside a pod VM
    sandbox_id: str = ""
    container_id: str = ""
