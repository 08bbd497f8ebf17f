"""What the runtime calls at each pod and container event: one method per event.

:class:`NoNri` is what every runtime gets when NRI is disabled (the default): each method
does nothing and returns its input, so a call site is one line and costs nothing.
:class:`vmcri.nri.adaptation.Adaptation` is the real one. Methods that may refuse raise
PluginError; the others never raise.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Protocol

from vmcri.model import Resources
from vmcri.store.records import ContainerRecord, SandboxRecord


class NriHooks(Protocol):
    def run_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        """Before the sandbox is READY; a refusal fails RunPodSandbox."""
        ...

    def stop_pod_sandbox(self, sandbox: SandboxRecord) -> None: ...

    def remove_pod_sandbox(self, sandbox: SandboxRecord) -> None: ...

    def update_pod_sandbox(
        self, sandbox: SandboxRecord, overhead: Resources | None, resources: Resources | None
    ) -> None:
        """Before a pod's resources change; a refusal fails UpdatePodSandboxResources."""
        ...

    def post_update_pod_sandbox(self, sandbox: SandboxRecord) -> None: ...

    def create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> ContainerRecord:
        """The record with its config adjusted by the plugins, before any backend sees it;
        a refusal or conflict fails CreateContainer."""
        ...

    def restoring(self) -> AbstractContextManager[None]:
        """Around a restored container's CreateContainer (RestorePod): the plugins see it
        as any creation, but only adjustments that can reach a restored process hold."""
        ...

    def post_create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None: ...

    def start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        """Before the start; a refusal fails StartContainer."""
        ...

    def post_start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None: ...

    def update_container(
        self, sandbox: SandboxRecord, record: ContainerRecord, resources: Resources
    ) -> Resources:
        """The resources to apply, as the plugins changed them; a refusal fails the update."""
        ...

    def post_update_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None: ...

    def container_stopped(self, record: ContainerRecord) -> None:
        """The container has exited (however); plugins hear of it off the caller's thread."""
        ...

    def remove_container(self, record: ContainerRecord) -> None: ...

    def start(self) -> None:
        """Listen and start the pre-installed plugins; raises OSError (the socket)."""
        ...

    def stop(self) -> None: ...


class NoNri:
    """NRI disabled: nothing happens."""

    def run_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def stop_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def remove_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def update_pod_sandbox(
        self, sandbox: SandboxRecord, overhead: Resources | None, resources: Resources | None
    ) -> None:
        pass

    def post_update_pod_sandbox(self, sandbox: SandboxRecord) -> None:
        pass

    def create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> ContainerRecord:
        return record

    def restoring(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def post_create_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        pass

    def start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        pass

    def post_start_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        pass

    def update_container(
        self, sandbox: SandboxRecord, record: ContainerRecord, resources: Resources
    ) -> Resources:
        return resources

    def post_update_container(self, sandbox: SandboxRecord, record: ContainerRecord) -> None:
        pass

    def container_stopped(self, record: ContainerRecord) -> None:
        pass

    def remove_container(self, record: ContainerRecord) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
