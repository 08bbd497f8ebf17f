"""What a failed integration test adds to its report: the ends of the daemon's log and of
each pod VM's console, which CI prints and then deletes with the machine."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, TypeGuard

DAEMON_LINES = 40
CONSOLE_LINES = 15
LINE_CHARS = 400


def failure_sections(fixtures: Iterable[object]) -> list[tuple[str, str]]:
    """Report sections for the daemons among (or inside) a test's fixture values."""
    sections: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for value in fixtures:
        daemon = value if _is_daemon(value) else getattr(value, "daemon", None)
        if not _is_daemon(daemon) or daemon.log in seen:
            continue
        seen.add(daemon.log)
        for console in sorted(daemon.state.glob("backends/*/*/console.log")):
            pod = console.parent.name[:12]
            sections.append((f"guest console of pod {pod} (end)", _tail(console, CONSOLE_LINES)))
        # Last: where CI's excerpt of the output, its end, shows the daemon's last words
        sections.append((f"daemon log {daemon.log} (end)", _tail(daemon.log, DAEMON_LINES)))
    return sections


class _Daemon(Protocol):
    log: Path
    state: Path


def _is_daemon(value: object) -> TypeGuard[_Daemon]:
    return isinstance(getattr(value, "log", None), Path) and hasattr(value, "state")


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - lines * LINE_CHARS))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read: {exc})"
    return "\n".join(line[:LINE_CHARS] for line in text.splitlines()[-lines:])
