"""Where each runtime handler keeps its files: one directory per handler, not per kind.

::

    <root>/backends/<handler>/     persistent: writable layers, a VM pod's disk
    <state>/backends/<handler>/    runtime: sockets, mounts, exit files

Two handlers of one backend kind (say ``vm`` and ``vm-kvm``, with other options)
each get their own, so neither finds, tears down or mounts over the other's pods.
Handler names are ``[A-Za-z0-9_-]`` (checked by the config), so a name is one
path component.

Before, the directories were per backend kind (``backends/<kind>``). A handler named
like its kind (the default ``vm`` and ``runc``) keeps that directory, so its pods
are found again after an upgrade. A handler named otherwise would now look in
``backends/<handler>`` for pods whose files are still under ``backends/<kind>``:
it could not reach their VMs or mounts, and would leak their disks. Start-up
refuses that case (:func:`check_no_kind_dir_pods`), naming the pod and the path,
rather than lose track of what runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vmcri.config import Config
from vmcri.errors import ConfigError
from vmcri.store.records import ContainerRecord, SandboxRecord

BACKENDS_DIR = "backends"


@dataclass(frozen=True)
class HandlerDirs:
    root: Path  # persistent
    state: Path  # runtime


def handler_dirs(config: Config, handler: str) -> HandlerDirs:
    """The two directories of the handler named ``handler``."""
    return HandlerDirs(
        root=config.root_dir / BACKENDS_DIR / handler,
        state=config.state_dir / BACKENDS_DIR / handler,
    )


def check_no_kind_dir_pods(
    config: Config,
    sandboxes: Iterable[SandboxRecord],
    containers_of: Callable[[str], Iterable[ContainerRecord]],
) -> None:
    """Refuse to start when a pod of a handler not named like its kind has files in
    the old per-kind directory (the layout before per-handler directories).

    A backend keeps a pod's files in an entry named by the sandbox or container ID,
    one or two levels below its directory (``vm``: ``<id>/``; ``runc``:
    ``sandboxes/<id>``, ``containers/<id>``); IDs are random, so a name match is
    that pod's. Only names are listed, nothing is opened or followed.

    Raises ConfigError naming the handler, the pod and the directory.
    """
    names_by_kind: dict[str, set[str]] = {}
    for sandbox in sandboxes:
        handler = config.runtimes.get(sandbox.handler)
        if handler is None or sandbox.handler == handler.backend:
            continue
        kind = handler.backend
        if kind not in names_by_kind:
            names_by_kind[kind] = _entry_names(
                [config.root_dir / BACKENDS_DIR / kind, config.state_dir / BACKENDS_DIR / kind]
            )
        ids = {sandbox.id, *(c.id for c in containers_of(sandbox.id))}
        if ids & names_by_kind[kind]:
            raise ConfigError(
                f"runtimes.{sandbox.handler}: pod sandbox {sandbox.id} of this handler has its "
                f"files under {BACKENDS_DIR}/{kind}/ (in {config.root_dir} or "
                f"{config.state_dir}), where vmcri kept every {kind!r} handler's pods before "
                f"each handler got {BACKENDS_DIR}/<handler>/; name the handler {kind!r} "
                "again, or stop and remove its pods with the vmcri version that made them"
            )


def _entry_names(kind_dirs: Iterable[Path]) -> set[str]:
    """Names of the entries one and two levels below each directory (not following links)."""
    names: set[str] = set()
    for top in kind_dirs:
        for entry in _scan(top):
            names.add(entry.name)
            if entry.is_dir(follow_symlinks=False):
                names.update(e.name for e in _scan(Path(entry.path)))
    return names


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list {directory}: {exc.strerror}") from exc
