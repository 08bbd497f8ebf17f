"""How a container ended: the one record both backends and the runc monitor share.

A module of its own so that the runc monitor, a process per container, can
write it without importing the backend contract and the domain model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    finished_at: int  # ns since the epoch
    reason: str = ""  # "Completed", "Error", "OOMKilled"
    message: str = ""
