"""How a container ended: the one record both backends share (vmcri.supervisor.exits)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    finished_at: int  # ns since the epoch
    reason: str = ""  # "Completed", "Error", "OOMKilled"
    message: str = ""
