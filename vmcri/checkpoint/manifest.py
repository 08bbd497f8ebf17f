"""The manifest: what a checkpoint holds, written last and checked first.

It names the format version, the vmcri that wrote it, the handler and its facts (the
guest image version and hypervisor version of a VM pod), the pod's and containers'
configs and states with their restart counts, the pod's CNI result, and the size and
SHA-256 of every other file. A reader that does not know the format version refuses
the checkpoint; so does one that finds a key it does not know at the top level or in
an entry, a file name that could leave the directory, or more than the bounds below.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from vmcri.errors import InvalidArgument, StateCorrupt
from vmcri.ids import is_id
from vmcri.model import ContainerConfig, PodConfig
from vmcri.store.codec import dumps, from_jsonable
from vmcri.store.pod_network import PodNetwork

FORMAT = "vmcri.checkpoint/v1"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Configs carry annotations (256 KiB a pod at most in Kubernetes): far above a real pod."""
MAX_FILES = 1024
MAX_CONTAINERS = 256
MAX_FILE_BYTES = 1 << 40
"""One file: a VM's memory and disks are large, but 1 TiB is beyond any pod vmcri runs."""

# One path component of our own making: no '/', no leading dot, no control characters.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SavedContainer:
    """One container as it was when checkpointed; restored by its metadata name."""

    name: str
    id: str  # its ID on the node that wrote the checkpoint
    config: ContainerConfig
    image_id: str
    image_name: str
    state: str  # ContainerState name
    restart_count: int  # the config's metadata.attempt
    started_at: int = 0
    facts: dict[str, str] = field(default_factory=dict)  # the handler's, per container
    log_file: str = ""  # the checkpoint file holding the newest part of its CRI log


@dataclass(frozen=True)
class Manifest:
    format: str
    vmcri_version: str
    created_at: int  # ns since the epoch
    handler: str  # RuntimeClass handler name
    backend: str  # "vm", "runc"
    guest_image_version: str  # "" where the handler has no guest
    handler_facts: dict[str, str]
    pod_id: str
    pod_config: PodConfig
    pod_state: str
    network: PodNetwork | None
    containers: tuple[SavedContainer, ...]
    files: tuple[FileEntry, ...]

    def encode(self) -> bytes:
        raw = dumps(self)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise InvalidArgument(f"the checkpoint manifest would be {len(raw)} bytes")
        return raw

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise InvalidArgument(f"path: the checkpoint holds no file {name!r}")


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(f"{what}: {name[:64]!r} is not a plain file name")
    return name


def decode(raw: bytes, field_name: str) -> Manifest:
    """The manifest in ``raw``; raises InvalidArgument naming ``field_name`` and the fault."""
    where = f"{field_name}: checkpoint manifest"
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"{where} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{where} is not valid JSON ({exc})") from exc
    _exact_keys(data, Manifest, where)
    if data["format"] != FORMAT:
        raise InvalidArgument(f"{where}: format {data['format']!r} is not {FORMAT!r}")
    if not isinstance(data["files"], list) or len(data["files"]) > MAX_FILES:
        raise InvalidArgument(f"{where}: files must be a list of at most {MAX_FILES}")
    if not isinstance(data["containers"], list) or len(data["containers"]) > MAX_CONTAINERS:
        raise InvalidArgument(f"{where}: containers must be a list of at most {MAX_CONTAINERS}")
    for i, entry in enumerate(data["files"]):
        _exact_keys(entry, FileEntry, f"{where}: files[{i}]")
    for i, entry in enumerate(data["containers"]):
        _exact_keys(entry, SavedContainer, f"{where}: containers[{i}]")
    try:
        manifest = from_jsonable(Manifest, data)
    except StateCorrupt as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from exc
    _check(manifest, where)
    return manifest


def _exact_keys(data: Any, cls: type, where: str) -> None:
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where} must be an object")
    known = {f.name for f in fields(cls)}
    required = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(f"{where}: unknown key {unknown[0][:64]!r}")
    missing = sorted(required - set(data))
    if missing:
        raise InvalidArgument(f"{where}: missing key {missing[0]!r}")


def _check(manifest: Manifest, where: str) -> None:
    names: set[str] = set()
    for i, entry in enumerate(manifest.files):
        check_name(entry.name, f"{where}: files[{i}].name")
        if entry.name in names:
            raise InvalidArgument(f"{where}: files[{i}]: {entry.name!r} is listed twice")
        names.add(entry.name)
        if not isinstance(entry.size, int) or not 0 <= entry.size <= MAX_FILE_BYTES:
            raise InvalidArgument(f"{where}: files[{i}].size is out of range")
        if not isinstance(entry.sha256, str) or not _SHA256.match(entry.sha256):
            raise InvalidArgument(f"{where}: files[{i}].sha256 is not a SHA-256 in hex")
    seen: set[str] = set()
    for i, saved in enumerate(manifest.containers):
        if saved.name != saved.config.metadata.name or saved.name in seen:
            raise InvalidArgument(f"{where}: containers[{i}].name {saved.name[:64]!r} is wrong")
        seen.add(saved.name)
        if not isinstance(saved.id, str) or not is_id(saved.id):
            # A restored VM pod's containers keep it: a store key and a path name here.
            raise InvalidArgument(f"{where}: containers[{i}].id is not a container ID")
        if saved.log_file and saved.log_file not in names:
            raise InvalidArgument(f"{where}: containers[{i}].log_file is not a listed file")
        if not isinstance(saved.restart_count, int) or saved.restart_count < 0:
            raise InvalidArgument(f"{where}: containers[{i}].restart_count is out of range")
