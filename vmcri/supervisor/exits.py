"""Write-once exit records: ``<dir>/<container id>.json``, the first writer wins.

Several parties can learn that a container ended: the agent's exit event, the libvirt death
callback of a pod VM, the host agent found dead, a stop that gave up on the agent. Each calls
:meth:`ExitRecords.record`; the file is written to a temporary name and ``link(2)``-ed into
place, which fails when the name exists, so the first account stays and later ones are
dropped, and only the first is sent up to the runtime. A reader never sees half a record.
The runtime reads records back once, when a restarted daemon starts (an exit the daemon
before kept but did not fold); while it runs, each exit reaches it as an event.

An unreadable record (a torn disk, a hand edit) reads as exit 255, reason ``Unknown``: the
container has ended (the record exists), how is lost. There is no other rule for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from vmcri.ids import is_id
from vmcri.store.atomic import fsync_dir
from vmcri.supervisor.api import ContainerExit

MAX_RECORD_BYTES = 8192


class ExitRecords:
    """The exit records of one pod's containers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, container_id: str) -> Path:
        if not is_id(container_id):
            raise ValueError(f"not a container ID: {container_id[:80]!r}")
        return self.directory / f"{container_id}.json"

    def record(self, container_id: str, exit: ContainerExit) -> bool:
        """Keep ``exit`` unless the container already has a record; True if this one won."""
        path = self._path(container_id)
        body = json.dumps(
            {
                "exit_code": exit.exit_code,
                "finished_at": exit.finished_at,
                "reason": exit.reason,
                "message": exit.message[:1024],
            }
        ).encode()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.directory / f".{container_id}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.directory)  # the record survives a crash, as write_atomic's do
        return True

    def read(self, container_id: str) -> ContainerExit | None:
        """The record, or None while the container has none."""
        try:
            with open(self._path(container_id), "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError:
            return _unreadable()
        if len(raw) > MAX_RECORD_BYTES:
            return _unreadable()
        try:
            entry = json.loads(raw)
            return ContainerExit(
                exit_code=int(entry["exit_code"]),
                finished_at=int(entry["finished_at"]),
                reason=str(entry.get("reason", "")),
                message=str(entry.get("message", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return _unreadable()

    def discard(self, container_id: str) -> None:
        """Forget the record (the container is removed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(container_id))


def _unreadable() -> ContainerExit:
    return ContainerExit(255, time.time_ns(), "Unknown", "the exit record is unreadable")
