"""The ``SandboxBackend`` container methods that both backends answer the same way.

A backend that hands its containers to the pod's agent (both do) inherits these and
keeps only what differs: the sandbox, the container's rootfs and spec, removal of its
host-side files, resource bodies and port-forward. Each method is the one call into
:class:`~vmcri.supervisor.containers.SupervisedContainers`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmcri.handlers.base import ContainerLiveness, ContainerUsage, ExecResult, ProcessSession
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.containers import EXEC_OUTPUT_LIMIT, SupervisedContainers


class SupervisedContainerMethods:
    _containers: SupervisedContainers
    exec_output_limit: int = EXEC_OUTPUT_LIMIT

    def start_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        return self._containers.start(sandbox, container)

    def signal_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, signum: int
    ) -> None:
        self._containers.signal(sandbox, container, signum)

    def container_liveness(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerLiveness:
        return self._containers.liveness(sandbox, container)

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        return self._containers.exec_sync(
            sandbox, container, cmd, timeout_s, output_limit=self.exec_output_limit
        )

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        self._containers.reopen_log(sandbox, container)

    def container_usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        return self._containers.usage(sandbox, container)

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        """Raises FailedPrecondition (agent gone), AgentUnavailable, the agent's errors."""
        return self._containers.exec_session(sandbox, container, cmd, tty=tty, stdin=stdin)

    def attach_supported(self) -> bool:
        return True

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        """Raises FailedPrecondition (agent gone), AgentUnavailable."""
        return self._containers.attach_session(sandbox, container)
