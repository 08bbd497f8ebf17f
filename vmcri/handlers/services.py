"""What a backend may reach of the runtime: what its pods' supervisor reaches (record
look-ups and the exit report, ``vmcri.supervisor.api.ContainerRecords``), sandbox look-ups,
and one change of its own facts.

Backends read records to map an event of theirs back to a container (an agent's exit
names a container ID; a dead VM names a sandbox). The one change a backend makes to a
record is to its own facts about a running sandbox (``SandboxRecord.runtime``, e.g. the
size a VM grew to), through the store's update; states, configs and everything else stay
with the runtime services (``vmcri/runtime/``). A Protocol, so this package need not
import the runtime (which imports the handler registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from vmcri.store.records import SandboxRecord
from vmcri.supervisor.api import ContainerRecords


class BackendServices(ContainerRecords, Protocol):
    def find_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        """The sandbox record with exactly this ID as stored now, or None."""
        ...

    def update_sandbox_runtime(self, sandbox_id: str, values: Mapping[str, str]) -> SandboxRecord:
        """Merge ``values`` into the sandbox's ``runtime`` facts (the store's one update,
        atomic on disk); returns the record. Raises NotFound."""
        ...
