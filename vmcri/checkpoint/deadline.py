"""The call's deadline, which bounds a checkpoint or a restore (the CRI has no timeout field)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vmcri.errors import DeadlineExceeded

DEFAULT_S = 600.0
"""Without a deadline on the call (crictl without --timeout), an operation still ends."""


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()

    @classmethod
    def of(cls, monotonic_deadline: float | None) -> Deadline:
        if monotonic_deadline is None:
            return cls(time.monotonic() + DEFAULT_S)
        return cls(monotonic_deadline)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self, doing: str) -> None:
        """Raises DeadlineExceeded naming what was being done when it passed."""
        if time.monotonic() >= self.at:
            raise DeadlineExceeded(f"the call's deadline passed while {doing}")
