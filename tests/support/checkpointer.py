"""``FakeCheckpointer``: a handler's checkpoint part that saves a file per container.

It keeps a fake supervisor's running containers in step, as a real handler's restore starts the
container's processes; ``fail_in_save`` / ``fail_in_restore`` make the named step fail
after it wrote or started something, to prove the framework removes it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import Manifest, SavedContainer
from vmcri.checkpoint.reader import VerifiedCheckpoint
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import HypervisorError
from vmcri.handlers.base import SandboxStarted
from vmcri.handlers.checkpointer import Refusal, RestoredContainer, SavedState
from vmcri.model import ImageInfo
from vmcri.store.records import ContainerRecord, SandboxRecord

FAKE_PID = 5151


@dataclass
class FakeCheckpointer:
    running: dict[str, str]  # the fake supervisor's running containers: ID -> sandbox ID
    refused: Refusal | None = None
    fail_in_save: bool = False
    fail_in_restore: bool = False
    during_save: Callable[[], None] | None = None
    restored: dict[str, bytes] = field(default_factory=dict)  # new container ID -> its state
    keeps_container_ids: bool = False

    def unavailable(self) -> Refusal | None:
        return self.refused

    def refusal(
        self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]
    ) -> Refusal | None:
        return self.refused

    def save(
        self,
        sandbox: SandboxRecord,
        containers: Sequence[ContainerRecord],
        out: CheckpointWriter,
        deadline: Deadline,
    ) -> SavedState:
        for container in containers:
            out.write_bytes(f"state-{container.id[:12]}", f"memory of {container.id}".encode())
        if self.during_save is not None:
            self.during_save()
        if self.fail_in_save:
            raise HypervisorError("the fake guest would not pause")
        return SavedState(
            guest_image_version="fake-image-1",
            container_facts={c.id: {"state": f"state-{c.id[:12]}"} for c in containers},
        )

    def restorable(self, manifest: Manifest) -> Refusal | None:
        return self.refused

    def restore_sandbox(
        self,
        sandbox: SandboxRecord,
        source: VerifiedCheckpoint,
        deadline: Deadline,
        images: Sequence[ImageInfo],
    ) -> SandboxStarted:
        return SandboxStarted()

    def restore_container(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        saved: SavedContainer,
        source: VerifiedCheckpoint,
        deadline: Deadline,
    ) -> RestoredContainer:
        if self.fail_in_restore:
            raise HypervisorError("the fake guest would not resume")
        self.restored[container.id] = source.read(saved.facts["state"])
        self.running[container.id] = sandbox.id
        return RestoredContainer({"restored": "yes"}, FAKE_PID)
