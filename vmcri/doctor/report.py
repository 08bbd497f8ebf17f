"""The doctor's report: one table for people, or JSON for tools."""

from __future__ import annotations

import json
from collections.abc import Sequence

from vmcri.doctor.model import Check, Status, pods_can_run

HEADER = ("CHECK", "STATUS", "FOUND")


def render_table(checks: Sequence[Check]) -> str:
    """Each check on one line; what vmcri does and the fix indented below it."""
    name_width = max(len(HEADER[0]), *(len(c.label) for c in checks))
    status_width = max(len(s.value) for s in Status)
    indent = " " * (name_width + status_width + 4)
    lines = [f"{HEADER[0]:<{name_width}}  {HEADER[1]:<{status_width}}  {HEADER[2]}"]
    for check in checks:
        lines.append(
            f"{check.label:<{name_width}}  {check.status.value:<{status_width}}  {check.found}"
        )
        if check.consequence:
            lines.append(f"{indent}-> {check.consequence}")
        if check.fix and check.status is not Status.OK:
            lines.append(f"{indent}fix: {check.fix}")
    verdict = "pods can run" if pods_can_run(list(checks)) else "some pods cannot run (see fail)"
    lines.append(f"\n{verdict}")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    report = {"pods_can_run": pods_can_run(list(checks)), "checks": [c.as_json() for c in checks]}
    return json.dumps(report, indent=2) + "\n"
