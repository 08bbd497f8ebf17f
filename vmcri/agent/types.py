"""Domain types of the agent client: what the VM backend gets, never wire (pb2) types."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from vmcri.usage import FsCapacity, UsageCounters


class ContainerStatus(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True)
class AgentInfo:
    agent_version: str
    protocol_version: int
    uptime_ns: int
    containers: int
    events_dropped: int


@dataclass(frozen=True)
class Mount9p:
    tag: str
    target: str
    options: tuple[str, ...] = ()


class VolumeKind(enum.Enum):
    """How a kubelet volume lives in the guest (agent.proto's VolumeKind)."""

    EMPTY_DIR = 1  # a directory on the pod's writable disk
    EMPTY_DIR_MEMORY = 2  # a tmpfs of its own
    COPY = 3  # the host's files, copied in and kept in sync
    FILE = 4  # one file, copied in once


@dataclass(frozen=True)
class VolumeFile:
    """One file of a copied volume; ``path`` is relative ("" for a FILE volume or for the
    owner and mode of an emptyDir)."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class GuestRoute:
    dst: str  # CIDR
    gateway: str = ""  # "" for an on-link route


@dataclass(frozen=True)
class GuestInterface:
    """A guest NIC the agent configures: found by MAC, given the pod interface's settings."""

    mac: str
    name: str
    mtu: int
    addresses: tuple[str, ...] = ()  # CIDR
    routes: tuple[GuestRoute, ...] = ()
    saved_mac: str = ""  # restored from a checkpoint: the MAC the NIC was saved with


@dataclass(frozen=True)
class SandboxFiles:
    """Guest paths of the pod's hostname, hosts and resolv.conf, to bind into containers,
    and of the pod's PID namespace for containers to join ("" unless one was asked for)."""

    hostname_path: str
    hosts_path: str
    resolv_conf_path: str
    pid_ns_path: str = ""


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    status: ContainerStatus
    pid: int
    exit_code: int
    oom_killed: bool
    created_at_ns: int
    started_at_ns: int
    finished_at_ns: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool


@dataclass(frozen=True)
class ContainerStats:
    container_id: str
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_working_set_bytes: int
    memory_rss_bytes: int
    pids: int
    oom_kills: int
    timestamp_ns: int
    counters: UsageCounters = field(default_factory=UsageCounters)
    # The container's writable layer as the guest measured it (None: the agent did not,
    # as for a rootfs the host assembled and measures itself).
    writable_layer: tuple[int, int] | None = None  # bytes, inodes
    writable_fs: FsCapacity | None = None  # the file system it is on, as the guest sees it


@dataclass(frozen=True)
class VmMemory:
    total_bytes: int
    free_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class GuestResources:
    """What the guest says is online after a hotplug (untrusted: it only harms itself)."""

    online_cpus: int
    memory_total_bytes: int


@dataclass(frozen=True)
class Stats:
    containers: tuple[ContainerStats, ...]
    vm_memory: VmMemory


@dataclass(frozen=True)
class OutputChunk:
    """Output of a container (``exec_id`` empty) or of an exec session.

    ``guest_time_ns`` is the guest's clock (may be off); ``received_at_ns`` the host's.
    """

    seq: int
    container_id: str
    exec_id: str
    stream: Literal["stdout", "stderr"]
    data: bytes
    eof: bool
    guest_time_ns: int
    received_at_ns: int


@dataclass(frozen=True)
class ContainerExit:
    seq: int
    container_id: str
    exit_code: int
    oom_killed: bool
    finished_at_ns: int
    termination_message: bytes = b""


@dataclass(frozen=True)
class ExecExit:
    seq: int
    container_id: str
    exec_id: str
    exit_code: int


@dataclass(frozen=True)
class PortForwardData:
    """Bytes from a forwarded port in the guest; ``eof`` ends the stream (``error`` says why)."""

    seq: int
    stream_id: str
    data: bytes
    eof: bool
    error: str


AgentEvent = OutputChunk | ContainerExit | ExecExit | PortForwardData
