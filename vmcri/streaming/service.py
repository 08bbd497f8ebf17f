"""The streaming service: validates Exec/Attach/PortForward, issues URLs, opens sessions.

The RPCs check what kubelet's streaming server checks (and which gRPC code a failure
gets) before a URL is issued; when the client comes back with it, the container or pod
is looked up again, since it may have stopped meanwhile. The pod's supervisor (exec,
attach) or backend (port-forward) of its RuntimeClass handler does the work, so there is
no ``if vm`` here.
"""

from __future__ import annotations

from vmcri.config import StreamingConfig
from vmcri.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from vmcri.handlers.base import SandboxBackend
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState
from vmcri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from vmcri.streaming.server import ServerLimits, StreamingServer
from vmcri.supervisor.api import PortConnection, ProcessSession

MAX_CMD_ARGS = 4096
MAX_CMD_BYTES = 128 * 1024


class StreamingService:
    def __init__(
        self,
        services: Services,
        containers: ContainerService,
        config: StreamingConfig,
        limits: ServerLimits | None = None,
    ) -> None:
        self._s = services
        self._containers = containers
        limits = limits or ServerLimits(
            idle_timeout_s=config.idle_timeout_s,
            max_sessions_per_pod=config.max_sessions_per_pod,
        )
        self.server = StreamingServer(self, config.address, config.port, limits)

    def start(self) -> None:
        """Raises ConfigError when the streaming address cannot be bound."""
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    # ---- RPCs ------------------------------------------------------------------------------

    def exec_url(self, request: ExecRequest) -> str:
        """Raises InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted."""
        if not request.container_id:
            raise InvalidArgument("container_id: missing")
        if not request.cmd:
            raise InvalidArgument("cmd: must not be empty")
        if len(request.cmd) > MAX_CMD_ARGS or sum(len(a) for a in request.cmd) > MAX_CMD_BYTES:
            raise InvalidArgument(f"cmd: longer than {MAX_CMD_ARGS} args or {MAX_CMD_BYTES} bytes")
        if any("\0" in a for a in request.cmd):
            raise InvalidArgument("cmd: arguments must not contain NUL")
        _check_stdio(request.tty, request.stdin, request.stdout, request.stderr)
        container, sandbox = self._running(request.container_id)
        return self.server.url_for(_with_id(request, container.id, sandbox.id))

    def attach_url(self, request: AttachRequest) -> str:
        """Raises InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted."""
        if not request.container_id:
            raise InvalidArgument("container_id: missing")
        _check_stdio(request.tty, request.stdin, request.stdout, request.stderr)
        container, sandbox = self._running(request.container_id)
        if not self._backend(sandbox).supervisor.attach_supported():
            raise Unimplemented(
                f"attach: the {sandbox.handler or 'default'!r} runtime handler cannot attach "
                "to a container's stdio; use exec, or read the container log"
            )
        return self.server.url_for(_with_id(request, container.id, sandbox.id))

    def port_forward_url(self, request: PortForwardRequest) -> str:
        """Raises InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted."""
        if not request.sandbox_id:
            raise InvalidArgument("pod_sandbox_id: missing")
        for i, port in enumerate(request.ports):
            if not 0 < port <= 65535:
                raise InvalidArgument(f"port[{i}]: {port} is not a TCP port (1-65535)")
        sandbox = self._ready_sandbox(request.sandbox_id)
        return self.server.url_for(
            PortForwardRequest(sandbox.id, tuple(sorted(set(request.ports))))
        )

    # ---- StreamingRuntime ------------------------------------------------------------------

    def exec_session(self, request: ExecRequest) -> ProcessSession:
        container, sandbox = self._running(request.container_id)
        return self._backend(sandbox).supervisor.exec_session(
            sandbox, container, request.cmd, tty=request.tty, stdin=request.stdin
        )

    def attach_session(self, request: AttachRequest) -> ProcessSession:
        container, sandbox = self._running(request.container_id)
        return self._backend(sandbox).supervisor.attach_session(
            sandbox, container, tty=request.tty, stdin=request.stdin
        )

    def port_connect(self, sandbox_id: str, port: int) -> PortConnection:
        sandbox = self._ready_sandbox(sandbox_id)
        return self._backend(sandbox).port_connect(sandbox, port)

    # ---- lookups ---------------------------------------------------------------------------

    def _backend(self, sandbox: SandboxRecord) -> SandboxBackend:
        return self._s.handlers.backend_for(sandbox)

    def _running(self, container_id: str) -> tuple[ContainerRecord, SandboxRecord]:
        found = self._s.store.containers.find(container_id)
        if found is None:
            raise NotFound(f"container_id {container_id!r}: no such container")
        container = self._containers.refresh(found.id)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(
                f"container_id {container.id}: container is {container.state.value}, not RUNNING"
            )
        sandbox = self._s.store.sandboxes.find(container.sandbox_id)
        if sandbox is None:
            raise NotFound(f"container_id {container.id}: its pod sandbox is gone")
        return container, sandbox

    def _ready_sandbox(self, sandbox_id: str) -> SandboxRecord:
        sandbox = self._s.store.sandboxes.find(sandbox_id)
        if sandbox is None:
            raise NotFound(f"pod_sandbox_id {sandbox_id!r}: no such sandbox")
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(
                f"pod_sandbox_id {sandbox.id}: sandbox is {sandbox.state.value}, not READY"
            )
        return sandbox


def _check_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        # With a tty there is one output stream; kubelet refuses the combination too.
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


def _with_id(
    request: ExecRequest | AttachRequest, container_id: str, sandbox_id: str
) -> ExecRequest | AttachRequest:
    from dataclasses import replace

    return replace(request, container_id=container_id, sandbox_id=sandbox_id)
