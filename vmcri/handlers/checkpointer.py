"""What a handler does for a checkpoint: save and restore its pods' state.

The framework (``vmcri.checkpoint``) owns the directory, the manifest, the configs, the
deadline and the clean-up; a handler's :class:`PodCheckpointer` only writes the state
its isolation holds (a VM's memory and disks, CRIU images) through the writer, and
brings it back from a verified checkpoint. Each handler's is registered beside its
backend (``vmcri.handlers.registry.BackendKind.checkpointer``). A handler that cannot
checkpoint says why in :meth:`PodCheckpointer.unavailable`, and the framework refuses
with that reason before it touches the directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import Manifest, SavedContainer
from vmcri.checkpoint.reader import VerifiedCheckpoint
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.errors import FailedPrecondition, Unimplemented, VmcriError
from vmcri.handlers.base import SandboxStarted
from vmcri.model import ImageInfo
from vmcri.store.records import ContainerRecord, SandboxRecord


@dataclass(frozen=True)
class Refusal:
    """Why a handler cannot checkpoint: ``code`` is ``UNIMPLEMENTED`` (never, on this
    node) or ``FAILED_PRECONDITION`` (not this pod, or not now)."""

    code: str
    reason: str


@dataclass(frozen=True)
class SavedState:
    """What a handler's save adds to the manifest."""

    guest_image_version: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    container_facts: dict[str, dict[str, str]] = field(default_factory=dict)  # by container ID


@dataclass(frozen=True)
class RestoredContainer:
    """A container running again in a restored pod: its runtime facts (as the backend's
    ``create_container`` returns them) and its pid (0 when not meaningful on the host)."""

    runtime: dict[str, str]
    pid: int


class PodCheckpointer(Protocol):
    keeps_container_ids: bool
    """True: a restored container keeps its ID from the checkpoint (a VM's guest knows
    its containers by it), so a pod cannot be restored where its containers still are."""

    def unavailable(self) -> Refusal | None:
        """Why no pod of this handler can be checkpointed on this node, else None."""
        ...

    def refusal(
        self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]
    ) -> Refusal | None:
        """Why this pod, with these ``containers`` (those not exited), cannot be
        checkpointed now (e.g. a volume it mounts from the host), else None."""
        ...

    def save(
        self,
        sandbox: SandboxRecord,
        containers: Sequence[ContainerRecord],
        out: CheckpointWriter,
        deadline: Deadline,
    ) -> SavedState:
        """Write the pod's state through ``out`` and leave the pod running as it was.

        On any failure or the deadline: the pod runs on unchanged, and the caller
        removes what ``out`` holds. Raises VmcriError.
        """
        ...

    def restorable(self, manifest: Manifest) -> Refusal | None:
        """Why this checkpoint cannot be restored here (another guest image, hypervisor,
        CPU model), else None; asked after the checkpoint verified."""
        ...

    def restore_sandbox(
        self,
        sandbox: SandboxRecord,
        source: VerifiedCheckpoint,
        deadline: Deadline,
        images: Sequence[ImageInfo],
    ) -> SandboxStarted:
        """Bring the new sandbox up from ``source`` instead of booting it; ``images``: the
        images kubelet's container configs name, on this node. On failure undo
        everything (as ``run_sandbox`` does) and raise."""
        ...

    def restore_container(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        saved: SavedContainer,
        source: VerifiedCheckpoint,
        deadline: Deadline,
    ) -> RestoredContainer:
        """Bring ``saved`` back in the restored ``sandbox`` as ``container`` (its record,
        with the checkpoint's container ID, made from kubelet's new config), running, in
        place of the backend's ``create_container``. Its output goes to its new log path."""
        ...


class NoCheckpoints:
    """A handler's checkpointer that refuses every call with one reason."""

    keeps_container_ids = False

    def __init__(self, refusal: Refusal) -> None:
        self._refusal = refusal

    def unavailable(self) -> Refusal | None:
        return self._refusal

    def refusal(
        self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]
    ) -> Refusal | None:
        return self._refusal

    def save(
        self,
        sandbox: SandboxRecord,
        containers: Sequence[ContainerRecord],
        out: CheckpointWriter,
        deadline: Deadline,
    ) -> SavedState:
        raise AssertionError("refused before save")  # pragma: no cover

    def restorable(self, manifest: Manifest) -> Refusal | None:
        return self._refusal

    def restore_sandbox(
        self,
        sandbox: SandboxRecord,
        source: VerifiedCheckpoint,
        deadline: Deadline,
        images: Sequence[ImageInfo],
    ) -> SandboxStarted:
        raise AssertionError("refused before restore")  # pragma: no cover

    def restore_container(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        saved: SavedContainer,
        source: VerifiedCheckpoint,
        deadline: Deadline,
    ) -> RestoredContainer:
        raise AssertionError("refused before restore")  # pragma: no cover


def refuse(refusal: Refusal, subject: str) -> VmcriError:
    """The error a refusal answers with, ``subject`` first (``pod sandbox abc``)."""
    error = Unimplemented if refusal.code == "UNIMPLEMENTED" else FailedPrecondition
    return error(f"{subject}: {refusal.reason}")
