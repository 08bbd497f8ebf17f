"""What a backend may reach of the runtime: record look-ups, one exit notification and
one change of its own facts.

Backends read records to map an event of theirs back to a container (an agent's exit
names a container ID; a dead VM names a sandbox) and tell the runtime when they have
recorded an exit. The one change a backend makes to a record is to its own facts about
a running sandbox (``SandboxRecord.runtime``, e.g. the size a VM grew to), through the
store's update; states, configs and everything else stay with the runtime services
(``vmcri/runtime/``). A Protocol, so this package need not import the runtime's
``Services`` (which imports the handler registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from vmcri.store.records import ContainerRecord, SandboxRecord


class BackendServices(Protocol):
    def find_container(self, container_id: str) -> ContainerRecord | None:
        """The container record with exactly this ID, or None."""
        ...

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]: ...

    def find_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        """The sandbox record with exactly this ID as stored now, or None."""
        ...

    def update_sandbox_runtime(self, sandbox_id: str, values: Mapping[str, str]) -> SandboxRecord:
        """Merge ``values`` into the sandbox's ``runtime`` facts (the store's one update,
        atomic on disk); returns the record. Raises NotFound."""
        ...

    def container_exited(self, container_id: str) -> None:
        """A backend has recorded this container's exit: fold it into the record now."""
        ...
