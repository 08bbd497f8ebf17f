"""The state store: every sandbox and container record, in memory and on disk.

Each record is one JSON file (``<root>/sandboxes/<id>.json``,
``<root>/containers/<id>.json``) written atomically. All changes go through
``add``/``update``/``remove`` of a :class:`Table`, under one lock, so a reader
never sees a half-applied change and names stay unique. A file that cannot be
read at start-up is moved to ``<root>/quarantine/`` and reported; the rest load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from vmcri.errors import AlreadyExists, InvalidArgument, NotFound, StateCorrupt
from vmcri.store import codec
from vmcri.store.atomic import remove_file, write_atomic
from vmcri.store.records import ContainerRecord, SandboxRecord, check_transition

log = logging.getLogger(__name__)


R = TypeVar("R", SandboxRecord, ContainerRecord)


class Table(Generic[R]):
    """One kind of record: ID and name indexes plus the files behind them."""

    def __init__(self, kind: str, cls: type[R], directory: Path, lock: threading.RLock) -> None:
        self.kind = kind
        self._cls: type[R] = cls
        self._dir = directory
        self._lock = lock
        self._by_id: dict[str, R] = {}
        self._by_name: dict[str, str] = {}

    def load(self, quarantine: Path) -> list[str]:
        """Read every record file; quarantine the ones that do not decode."""
        problems: list[str] = []
        self._dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._dir.glob("*.json")):
            try:
                record = codec.loads(self._cls, path.read_bytes())
                if record.id != path.stem:
                    raise StateCorrupt(f"file holds record {record.id}")
                if record.name_key in self._by_name:
                    raise StateCorrupt(f"duplicate name {record.name_key}")
            except (StateCorrupt, OSError) as exc:
                quarantine.mkdir(parents=True, exist_ok=True)
                os.replace(path, quarantine / f"{self.kind}-{path.name}")
                problems.append(f"{self.kind} record {path.name}: {exc}; moved to {quarantine}")
                continue
            self._by_id[record.id] = record
            self._by_name[record.name_key] = record.id
        for stale in self._dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return problems

    def add(self, record: R) -> R:
        """Insert a new record; ALREADY_EXISTS when its ID or name is taken."""
        with self._lock:
            if record.id in self._by_id:
                raise AlreadyExists(f"{self.kind} {record.id} already exists")
            if record.name_key in self._by_name:
                other = self._by_name[record.name_key]
                raise AlreadyExists(f"{self.kind} name {record.name_key!r} is reserved by {other}")
            self._persist(record)
            self._by_id[record.id] = record
            self._by_name[record.name_key] = record.id
            return record

    def update(self, ident: str, change: Callable[[R], R]) -> R:
        """Apply ``change`` to the record atomically (memory and disk) and return the result."""
        with self._lock:
            old = self.get(ident)
            new = change(old)
            if new.id != old.id or new.name_key != old.name_key:
                raise InvalidArgument(f"{self.kind} {old.id}: ID and name cannot change")
            check_transition(self.kind, old.id, old.state, new.state)
            if new != old:
                self._persist(new)
                self._by_id[new.id] = new
            return new

    def set_fields(self, ident: str, **changes: Any) -> R:
        """Shorthand for an :meth:`update` that replaces some fields, any of them (the
        state too, whose transition is checked like every update's)."""
        return self.update(ident, lambda r: dataclasses.replace(r, **changes))

    def remove(self, ident: str) -> None:
        with self._lock:
            record = self._by_id.pop(ident, None)
            if record is None:
                return
            self._by_name.pop(record.name_key, None)
            remove_file(self._path(ident))

    def get(self, ident: str) -> R:
        """The record with this ID or unique ID prefix; NOT_FOUND otherwise."""
        with self._lock:
            found = self.find(ident)
            if found is None:
                raise NotFound(f"{self.kind} {ident!r} not found")
            return found

    def find(self, ident: str) -> R | None:
        """Like :meth:`get` but None when absent. An ambiguous prefix is INVALID_ARGUMENT."""
        with self._lock:
            if ident in self._by_id:
                return self._by_id[ident]
            if not ident:
                return None
            matches = [r for i, r in self._by_id.items() if i.startswith(ident)]
            if len(matches) > 1:
                raise InvalidArgument(f"{self.kind} ID prefix {ident!r} is ambiguous")
            return matches[0] if matches else None

    def list(self) -> list[R]:
        with self._lock:
            return list(self._by_id.values())

    def _path(self, ident: str) -> Path:
        return self._dir / f"{ident}.json"

    def _persist(self, record: R) -> None:
        write_atomic(self._path(record.id), codec.dumps(record))


class Store:
    """Sandboxes and containers, kept under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self.sandboxes: Table[SandboxRecord] = Table(
            "sandbox", SandboxRecord, root / "sandboxes", self._lock
        )
        self.containers: Table[ContainerRecord] = Table(
            "container", ContainerRecord, root / "containers", self._lock
        )

    def load(self) -> list[str]:
        """Load every record from disk; returns the problems found (already quarantined)."""
        quarantine = self.root / "quarantine"
        problems = self.sandboxes.load(quarantine) + self.containers.load(quarantine)
        for problem in problems:
            log.error("state: %s", problem)
        return problems

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers.list() if c.sandbox_id == sandbox_id]
