"""The container supervisor's API: what the runtime calls for a running container, and what
the supervisor reports back.

As containerd's CRI plugin talks to a pod's shim through the task API beside its sandbox
controller, vmcri's container service (``vmcri.runtime.containers``) calls a pod's
:class:`ContainerSupervisor` directly for everything a running container does (start,
signal, exec, attach, logs, usage); the sandbox backend (``vmcri.handlers``) only runs the
pod, prepares a container's rootfs and volumes, makes room for it, and says where the
pod's agent is by the supervisor it places there. Calls run one way: the supervisor
imports nothing of the handlers or the runtime, and reports up through
:class:`ContainerRecords` (an exit travels once, carrying how the container ended).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.usage import FsCapacity, UsageCounters


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    finished_at: int  # ns since the epoch
    reason: str = ""  # "Completed", "Error", "OOMKilled"
    message: str = ""


@dataclass(frozen=True)
class ContainerLiveness:
    """Whether a container can be running: its pod's agent is up and has not reported its
    exit. An exit is never returned here: it has travelled up as an event already."""

    running: bool
    pid: int = 0


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


class ContainerRecords(Protocol):
    """What the supervisor reaches of the runtime: record look-ups (to map an agent's event
    back to a container) and the one report it makes, an exit."""

    def find_container(self, container_id: str) -> ContainerRecord | None:
        """The container record with exactly this ID, or None."""
        ...

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]: ...

    def container_exited(self, container_id: str, exit: ContainerExit) -> None:
        """The container ended so (the first account of it, already kept on disk for a
        restarted daemon): fold it into the record now. Called on the reporter's thread."""
        ...


class ContainerSupervisor(Protocol):
    """A pod's running containers, as the container service drives them (the task API)."""

    def start(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """Start the created container; returns its pid (0 when not meaningful on the host)."""
        ...

    def signal(self, sandbox: SandboxRecord, container: ContainerRecord, signum: int) -> None:
        """Send ``signum`` to the container's init; an ended container is left alone. The
        exit comes back through ``ContainerRecords.container_exited``."""
        ...

    def liveness(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerLiveness:
        """Whether it can be running; a gone agent reports its containers' exits first."""
        ...

    def recorded_exit(self, sandbox: SandboxRecord, container_id: str) -> ContainerExit | None:
        """The exit kept on disk (read back once by a restarted daemon), or None."""
        ...

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        """Raises DeadlineExceeded when the command outlived ``timeout_s`` (0: no limit)."""
        ...

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None: ...

    def usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage: ...

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
