"""containers-registries.d(5): where an image's signatures are stored.

Every ``*.yaml`` file of the directory is read at start-up, strictly (unknown keys,
a scope configured in two files, or two ``default-docker`` sections are errors naming
the file)::

    default-docker:
      lookaside: https://sigs.example/store       # or file:///var/lib/sigs
      use-sigstore-attachments: true
    docker:
      registry.example:5000/team:                 # a scope, matched as in policy.json
        lookaside: http://127.0.0.1:8080/sigs

``lookaside`` (``sigstore`` is its older name) is where simple-signing signatures are
read: ``<lookaside>/<repository path>@sha256=<hex>/signature-<n>``, n from 1.
``use-sigstore-attachments`` reads sigstore signatures from the registry itself, as
the tag ``sha256-<hex>.sig`` beside the image. The ``*-staging`` keys say where
signing tools write; a node only reads, so they are accepted and ignored. Each
setting is taken from the most specific scope that sets it, then ``default-docker``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vmcri.errors import ConfigError
from vmcri.images.reference import Reference
from vmcri.images.trust.policy import check_docker_scope, docker_scopes

MAX_FILE_BYTES = 1 << 20
MAX_FILES = 256
_KEYS = {"lookaside", "lookaside-staging", "sigstore", "sigstore-staging"}
_KEYS |= {"use-sigstore-attachments"}


@dataclass(frozen=True)
class StorageConfig:
    """One scope's settings; None means "not set here"."""

    lookaside: str | None = None
    use_sigstore_attachments: bool | None = None


@dataclass(frozen=True)
class SignatureStores:
    """Every scope's settings, and the lookup that merges them for one reference."""

    default: StorageConfig = StorageConfig()
    docker: dict[str, StorageConfig] = field(default_factory=dict)
    source: str = "no registries.d"

    def _chain(self, ref: Reference) -> list[StorageConfig]:
        found = [self.docker[s] for s in docker_scopes(ref) if s in self.docker]
        return [*found, self.default]

    def lookaside(self, ref: Reference) -> str | None:
        """The lookaside base URL for ``ref``, if any scope sets one."""
        for conf in self._chain(ref):
            if conf.lookaside is not None:
                return conf.lookaside
        return None

    def use_sigstore_attachments(self, ref: Reference) -> bool:
        for conf in self._chain(ref):
            if conf.use_sigstore_attachments is not None:
                return conf.use_sigstore_attachments
        return False


def _storage(value: Any, where: str) -> StorageConfig:
    if value is None:
        return StorageConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in value:
        if key not in _KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(_KEYS))})")
    if "lookaside" in value and "sigstore" in value:
        raise ConfigError(f"{where}: lookaside and sigstore (its old name) are both set")
    url = value.get("lookaside", value.get("sigstore"))
    if url is not None:
        key = "lookaside" if "lookaside" in value else "sigstore"
        _check_url(url, f"{where}.{key}")
    attach = value.get("use-sigstore-attachments")
    if attach is not None and not isinstance(attach, bool):
        raise ConfigError(f"{where}.use-sigstore-attachments: expected true or false")
    return StorageConfig(url, attach)


def _check_url(url: Any, where: str) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: expected a URL")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("file", "http", "https"):
        raise ConfigError(f"{where}: {url!r} is not a file, http or https URL")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ConfigError(f"{where}: a file URL is file:///absolute/path")
    if parts.scheme != "file" and not parts.netloc:
        raise ConfigError(f"{where}: {url!r} names no host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: {url!r} may not have a query or fragment")


def load_registries_d(directory: Path) -> SignatureStores:
    """Read every ``*.yaml`` under ``directory``; a missing directory configures nothing.

    Raises ConfigError naming the file and key of anything unknown or malformed.
    """
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".yaml")
    except FileNotFoundError:
        return SignatureStores()
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot list registries.d: {exc.strerror}") from exc
    if len(files) > MAX_FILES:
        raise ConfigError(f"{directory}: more than {MAX_FILES} registries.d files")
    default: StorageConfig | None = None
    docker: dict[str, StorageConfig] = {}
    owner: dict[str, Path] = {}
    for path in files:
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping at the top")
        for key in doc:
            if key not in ("default-docker", "docker"):
                raise ConfigError(f"{path}: {key}: unknown key (known: default-docker, docker)")
        if "default-docker" in doc:
            if default is not None:
                raise ConfigError(f"{path}: default-docker: also set in another file")
            default = _storage(doc["default-docker"], f"{path}: default-docker")
        scopes = doc.get("docker") or {}
        if not isinstance(scopes, dict):
            raise ConfigError(f"{path}: docker: expected a mapping of scopes")
        for scope, value in scopes.items():
            where = f"{path}: docker.{scope}"
            if not isinstance(scope, str) or not scope:
                raise ConfigError(f"{where}: a scope must be a non-empty string")
            check_docker_scope(scope, where)
            if scope in docker:
                raise ConfigError(f"{where}: also configured in {owner[scope]}")
            docker[scope] = _storage(value, where)
            owner[scope] = path
    return SignatureStores(default or StorageConfig(), docker, str(directory))
