"""What a backend may reach of the runtime: record look-ups and one exit notification."""

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
