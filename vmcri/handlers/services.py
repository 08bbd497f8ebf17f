"""What a backend may reach of the runtime: record look-ups and one exit notification.

Backends read records to map an event of theirs back to a container (an agent's exit
names a container ID; a dead VM names a sandbox) and tell the runtime when they have
recorded an exit; every change to a record stays with the runtime services
(``vmcri/runtime/``). A Protocol, so this package need not import the runtime's
``Services`` (which imports the handler registry).
"""

from __future__ import annotations

from typing import Protocol

from vmcri.store.records import ContainerRecord


class BackendServices(Protocol):
    def find_container(self, container_id: str) -> ContainerRecord | None:
        """The container record with exactly this ID, or None."""
        ...

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]: ...

    def container_exited(self, container_id: str) -> None:
        """A backend has recorded this container's exit: fold it into the record now."""
        ...
