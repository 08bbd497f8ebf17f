"""The contract every sandbox backend (``vm``, ``runc``) fulfils.

The pod and container services (``vmcri.runtime``) own the records, names,
state transitions and log paths; a backend only does the host work. Every
method is idempotent where the CRI contract asks for it (stop, remove), treats
"already gone" as success, and leaves nothing behind when it fails half-way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from vmcri.handlers.exit_status import ContainerExit as ContainerExit
from vmcri.model import Resources
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.usage import FsCapacity, UsageCounters


@dataclass(frozen=True)
class HandlerFeatures:
    """What CRI Status reports per runtime handler."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False
    # Whether pods with NamespaceMode.NODE network (hostNetwork) can run; not reported to
    # kubelet, checked by the pod service, which names the field when it refuses one.
    host_network: bool = True
    # Whether pods and containers may share the node's PID or IPC namespace (hostPID,
    # hostIPC); a VM has neither to give. Checked like host_network, never reported.
    host_pid_ipc: bool = True
    # Whether containers run inside a guest, where the host's device nodes and binaries
    # (OCI hooks) do not exist: NRI adjustments that need them are refused (vmcri.nri).
    in_guest: bool = False
    # For a pod with a user namespace, the backend makes the pod's network namespace
    # itself, inside it, and reports it as SandboxStarted.netns_path; CNI runs on it
    # after run_sandbox. (runc 1.1 joins the user namespace first, and could not join a
    # network namespace the host's user namespace owns.)
    userns_owns_netns: bool = False


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
    counters: UsageCounters = field(default_factory=UsageCounters)  # cgroup and /proc
    layer_fs: FsCapacity | None = None  # the writable layer's file system


@dataclass(frozen=True)
class StreamOutput:
    """A chunk of an interactive process's output; empty ``data`` means that stream ended."""

    stream: Literal["stdout", "stderr"]
    data: bytes


class ProcessSession(Protocol):
    """An exec'd process, or an attachment to a container's own stdio (streaming server).

    One thread reads ``output()`` while others write stdin and resize.
    """

    def output(self) -> Iterator[StreamOutput]:
        """Chunks until every output stream ended or the session was closed."""
        ...

    def write_stdin(self, data: bytes) -> None:
        """Raises FailedPrecondition when the process's stdin is closed or absent."""
        ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None:
        """Terminal size in columns and rows; ignored without a tty."""
        ...

    def wait(self, timeout: float) -> int | None:
        """The exit code (0 for an attachment that ended), None if not known within timeout."""
        ...

    def close(self) -> None:
        """End the session: an exec'd process is killed, an attachment detaches. Idempotent."""
        ...


class PortConnection(Protocol):
    """A TCP connection to a port in a pod's network namespace (port-forward)."""

    def send(self, data: bytes) -> None:
        """Blocks while the peer does not read; raises ConnectionError when it is gone."""
        ...

    def recv(self, max_bytes: int) -> bytes:
        """Next bytes; b"" once the peer closed its side. Raises ConnectionError."""
        ...

    def close_write(self) -> None: ...

    def close(self) -> None: ...


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
        """Stop the sandbox (its containers have been killed); idempotent.

        A container that is somehow still running gets an exit record (137) here.
        """
        ...

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        """Release everything the sandbox held; idempotent."""
        ...

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool: ...

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        """Prepare the container (rootfs, spec, runc create); return facts to keep in its record."""
        ...

    def start_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """Start it; returns the pid (0 when not meaningful on the host)."""
        ...

    def signal_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, signum: int
    ) -> None:
        """Send ``signum`` to the container's init; an ended container is left alone.

        The container service stops a container with this (stop signal, wait, SIGKILL);
        the exit comes back through ``BackendServices.container_exited``.
        """
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
    ) -> None:
        """Give the container ``resources`` (UpdateContainerResources), making room for them
        first where the backend's isolation has a size (a VM grows); raises InvalidArgument
        naming ``linux.<field>`` when it cannot."""
        ...

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        """The pod's limits become ``resources`` (UpdatePodSandboxResources): make room for
        them, or raise InvalidArgument naming ``resources.<field>``, before they are recorded.
        A backend whose pods have no size of their own (the runc handler: kubelet sizes the
        pod cgroup itself) does nothing."""
        ...

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None: ...

    def container_usage(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerUsage: ...

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        """Start ``cmd`` in the running container for the streaming server."""
        ...

    def attach_supported(self) -> bool:
        """Whether attach_session can work, so the Attach RPC can answer UNIMPLEMENTED."""
        ...

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        """Attach to the running container's own stdio; Unimplemented where unsupported."""
        ...

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Connect to 127.0.0.1:``port`` in the pod's network namespace.

        Raises Unavailable (nothing listens) or FailedPrecondition (pod not running).
        """
        ...
