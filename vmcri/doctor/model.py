"""One line of the doctor's report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Status(Enum):
    OK = "ok"  # vmcri uses the feature
    INFO = "info"  # nothing to fix: a choice of the config, or not supported yet
    DEGRADED = "degraded"  # pods run, with a fallback (slower or missing a feature)
    FAIL = "fail"  # pods of a handler cannot run


@dataclass(frozen=True)
class Check:
    name: str  # what was checked, e.g. "kvm"
    status: Status
    found: str  # what the host offers
    consequence: str = ""  # what vmcri does about it
    fix: str = ""  # how to get the better outcome ("" when there is none to get)
    handler: str = ""  # the RuntimeClass handler this applies to; "" for the whole host

    @property
    def label(self) -> str:
        return f"{self.name} ({self.handler})" if self.handler else self.name

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def pods_can_run(checks: list[Check]) -> bool:
    return all(check.status is not Status.FAIL for check in checks)
