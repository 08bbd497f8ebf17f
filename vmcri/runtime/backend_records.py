"""What the backends and their supervisors reach of the runtime
(``vmcri.handlers.services.BackendServices``): record look-ups, the exit report, and a
sandbox's own facts. Built before the handlers, so the runtime's ``Services`` is complete
when it is made."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vmcri.runtime.exits import ContainerExits
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store
from vmcri.supervisor.api import ContainerExit


class BackendRecords:
    def __init__(self, store: Store, exits: ContainerExits) -> None:
        self._store = store
        self._exits = exits

    def find_container(self, container_id: str) -> ContainerRecord | None:
        found = self._store.containers.find(container_id)
        return found if found is not None and found.id == container_id else None

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return self._store.containers_of(sandbox_id)

    def container_exited(self, container_id: str, exit: ContainerExit) -> None:
        self._exits.container_exited(container_id, exit)

    def find_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        found = self._store.sandboxes.find(sandbox_id)
        return found if found is not None and found.id == sandbox_id else None

    def update_sandbox_runtime(self, sandbox_id: str, values: Mapping[str, str]) -> SandboxRecord:
        return self._store.sandboxes.update(
            sandbox_id, lambda r: dataclasses.replace(r, runtime={**r.runtime, **values})
        )
