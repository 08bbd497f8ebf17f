"""What a backend may reach of the daemon: the records, read-only, and nothing else.

Backends read the store to map an event of theirs back to a container (an agent's
exit names a container ID; a dead VM names a sandbox); every change to a record
stays with the runtime services (``vmcri/runtime/``). Written as Protocols so
this package need not import the runtime's ``Services`` (which imports the
handler registry) and a test can hand a backend a bare store.
"""

from __future__ import annotations

from typing import Protocol

from vmcri.store.records import ContainerRecord


class ContainerLookup(Protocol):
    def find(self, ident: str, /) -> ContainerRecord | None:
        """The container with this ID (or unique ID prefix), None when there is none."""
        ...


class RecordLookup(Protocol):
    @property
    def containers(self) -> ContainerLookup: ...

    def containers_of(self, sandbox_id: str, /) -> list[ContainerRecord]:
        """Every container recorded for the sandbox."""
        ...


class BackendServices(Protocol):
    """``BackendContext.services``: what backends use today, the store's two lookups."""

    @property
    def store(self) -> RecordLookup: ...
