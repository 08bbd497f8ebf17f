"""Sandbox and container records and their state machines.

Sandbox states (CRI PodSandboxState plus the creating phase)::

    CREATING ──▶ READY ──▶ NOTREADY ──▶ (removed)
        │                     ▲
        └─────────────────────┘      (creation failed half-way, or a stop)

Container states (CRI ContainerState)::

    CREATED ──▶ RUNNING ──▶ EXITED ──▶ (removed)
        │                     ▲
        └─────────────────────┘      (stopped or removed before it ran)
    any ──▶ UNKNOWN ──▶ RUNNING | EXITED   (lost contact, then found again)

Records are frozen; the store changes them only through ``Table.update``
(``vmcri/store/store.py``; ``Table.set_fields`` is its shorthand), which checks
the transition with :func:`check_transition`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from vmcri.errors import InvalidTransition
from vmcri.model import ContainerConfig, PodConfig
from vmcri.store.pod_network import PodNetwork


class SandboxState(Enum):
    CREATING = "CREATING"
    READY = "READY"
    NOTREADY = "NOTREADY"


class ContainerState(Enum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    UNKNOWN = "UNKNOWN"


_SANDBOX_MOVES: dict[SandboxState, frozenset[SandboxState]] = {
    SandboxState.CREATING: frozenset({SandboxState.READY, SandboxState.NOTREADY}),
    SandboxState.READY: frozenset({SandboxState.NOTREADY}),
    SandboxState.NOTREADY: frozenset(),
}

_CONTAINER_MOVES: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.CREATED: frozenset(
        {ContainerState.RUNNING, ContainerState.EXITED, ContainerState.UNKNOWN}
    ),
    ContainerState.RUNNING: frozenset({ContainerState.EXITED, ContainerState.UNKNOWN}),
    ContainerState.EXITED: frozenset(),
    ContainerState.UNKNOWN: frozenset({ContainerState.RUNNING, ContainerState.EXITED}),
}


def check_transition(kind: str, ident: str, old: Enum, new: Enum) -> None:
    """Raise InvalidTransition unless ``old`` may become ``new`` (staying put is allowed)."""
    if old == new:
        return
    moves: dict[Enum, frozenset[Enum]] = (
        _SANDBOX_MOVES if isinstance(old, SandboxState) else _CONTAINER_MOVES  # type: ignore[assignment]
    )
    if new not in moves[old]:
        raise InvalidTransition(f"{kind} {ident} cannot go from {old.value} to {new.value}")


@dataclass(frozen=True)
class SandboxRecord:
    id: str
    handler: str  # the RuntimeClass handler name the pod asked for ("" resolved)
    backend: str  # the backend that runs it: "vm" or "runc"
    config: PodConfig
    state: SandboxState = SandboxState.CREATING
    created_at: int = 0  # nanoseconds since the epoch
    netns_path: str = ""
    ip: str = ""
    additional_ips: tuple[str, ...] = ()
    # The pod network (netns + CNI result), set by the network layer before the backend
    # runs the sandbox; None for host-network pods and before networking is set up.
    network: PodNetwork | None = None
    # Backend-owned facts needed to find the sandbox again (domain name, sockets, pids).
    runtime: dict[str, str] = field(default_factory=dict)

    @property
    def name_key(self) -> str:
        m = self.config.metadata
        return f"{m.name}_{m.namespace}_{m.uid}_{m.attempt}"


@dataclass(frozen=True)
class RunAsUser:
    """The numeric identity a container's process runs as (CRI ContainerStatus.user)."""

    uid: int
    gid: int
    supplemental_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class ImageVolume:
    """An image a container mounts read-only (CRI ``Mount.image``), resolved at creation.

    Kept in the record so the backend can mount it and RemoveImage sees it in use.
    """

    mount_index: int  # which of ``config.mounts`` asked for it
    image_id: str  # the image's config digest
    layer_dirs: tuple[str, ...]  # unpacked layer directories, lowest first


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    sandbox_id: str
    config: ContainerConfig
    image_id: str  # the image's config digest ("sha256:...")
    image_name: str  # the normalised reference it was resolved from
    state: ContainerState = ContainerState.CREATED
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    log_path: str = ""  # absolute path of the CRI log file on the host
    pid: int = 0
    runtime: dict[str, str] = field(default_factory=dict)
    # Computed by the runtime layer at creation, the same for every backend.
    user: RunAsUser | None = None
    stop_signal: str = ""  # e.g. "SIGTERM": the CRI config's, else the image's
    image_volumes: tuple[ImageVolume, ...] = ()  # images mounted into it, in mount order

    @property
    def name_key(self) -> str:
        m = self.config.metadata
        return f"{self.sandbox_id}/{m.name}_{m.attempt}"
