"""The contract every sandbox backend (``vm``, ``runc``) fulfils.

The pod and container services (``vmcri.runtime``) own the records, names,
state transitions and log paths; a backend only does the host work. Every
method is idempotent where the CRI contract asks for it (stop, remove), treats
"already gone" as success, and leaves nothing behind when it fails half-way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.model import Resources
from vmcri.store.records import ContainerRecord, SandboxRecord


@dataclass(frozen=True)
class HandlerFeatures:
    """What CRI Status reports per runtime handler."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


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


@dataclass(frozen=True)
class SandboxStarted:
    """What a backend reports after a sandbox is up."""

    runtime: dict[str, str] = field(default_factory=dict)  # facts to find it again
    netns_path: str = ""
    ip: str = ""
    additional_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    finished_at: int  # ns since the epoch
    reason: str = ""  # "Completed", "Error", "OOMKilled"
    message: str = ""


@dataclass(frozen=True)
class ContainerLiveness:
    """What a backend knows now about a container it runs."""

    running: bool
    pid: int = 0
    exit: ContainerExit | None = None


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass(frozen=True)
class ContainerUsage:
    """A resource usage sample of one container."""

    timestamp: int  # ns
    cpu_usage_core_nano_seconds: int = 0
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    memory_rss_bytes: int = 0
    writable_layer_bytes: int = 0
    writable_layer_inodes: int = 0
    process_count: int = 0


class SandboxBackend(Protocol):
    """One isolation technology for pods, chosen per RuntimeClass handler."""

    def features(self) -> HandlerFeatures: ...

    def conditions(self) -> Sequence[Condition]:
        """Warnings or failures to show in CRI Status (e.g. running without KVM)."""
        ...

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        """Bring the pod's isolation up; on failure, undo everything and raise."""
        ...

    def stop_sandbox(self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]) -> None:
        """Stop every container and the sandbox; idempotent."""
        ...

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        """Release everything the sandbox held; idempotent."""
        ...

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool: ...

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        """Prepare the container (rootfs, spec, monitor); return facts to keep in its record."""
        ...

    def start_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """Start it; returns the pid (0 when not meaningful on the host)."""
        ...

    def stop_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, timeout_s: int
    ) -> None:
        """Stop signal, then SIGKILL after ``timeout_s``; returns when it has exited."""
        ...

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None: ...

    def container_liveness(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerLiveness: ...

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult: ...

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None: ...

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None: ...

    def container_usage(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerUsage: ...
