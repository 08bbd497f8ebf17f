"""Registry mirrors, insecure and blocked registries: containers-registries.conf(5) v2.

The supported subset, read strictly (an unknown key is an error naming it)::

    [[registry]]
    prefix = "registry.k8s.io"        # or "*.example.com", "example.com/team"
    location = "mirror.local:5000"    # where the prefix really lives ("" = the prefix)
    insecure = false                  # true: plain HTTP / unverified TLS allowed
    blocked = false                   # true: pulls from this origin are refused
    mirror-by-digest-only = false     # mirrors used only for pulls by digest
    [[registry.mirror]]
    location = "127.0.0.1:5000/k8s"
    insecure = true
    pull-from-mirror = "all"          # "all", "digest-only" or "tag-only"

Top-level keys containers/image knows but vmcri has no use for
(``unqualified-search-registries``, ``short-name-mode``, ``credential-helpers``,
``[aliases]``) are accepted and ignored: vmcri only pulls fully qualified names
(CRI references are normalised to docker.io, never searched). A missing file
means no mirrors and HTTPS everywhere. Mirrors are tried in order, then the origin.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmcri.errors import ConfigError
from vmcri.images.reference import DOCKER_HUB, DOCKER_HUB_ENDPOINT, Reference

_IGNORED_TOP = {"unqualified-search-registries", "short-name-mode", "credential-helpers", "aliases"}
_REGISTRY_KEYS = {"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"}
_MIRROR_KEYS = {"location", "insecure", "pull-from-mirror"}
_PULL_FROM = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str = ""
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """Where to fetch one repository: ``host`` (with port) and the repository path there."""

    host: str
    repository: str
    insecure: bool
    mirror: bool

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


@dataclass(frozen=True)
class RegistriesConf:
    registries: tuple[RegistryEntry, ...] = field(default_factory=tuple)

    def match(self, ref: Reference) -> RegistryEntry | None:
        """The entry with the longest matching prefix, as containers/image picks it."""
        best: RegistryEntry | None = None
        best_len = -1
        for entry in self.registries:
            n = _match_len(entry.prefix, ref)
            if n > best_len:
                best, best_len = entry, n
        return best

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Mirrors in order, then the origin; empty if nothing may be tried.

        Raises PermissionDenied-free: a blocked origin is simply left out; the
        caller turns an empty list into an error naming the registry.
        """
        entry = self.match(ref)
        origin = _origin(ref)
        if entry is None:
            # As Docker does, a registry on this host's loopback may speak plain HTTP
            # unless the file says otherwise.
            loopback = is_loopback(origin[0])
            return [Endpoint(origin[0], origin[1], insecure=loopback, mirror=False)]
        by_digest = ref.digest is not None
        result: list[Endpoint] = []
        for mirror in entry.mirrors:
            if entry.mirror_by_digest_only and not by_digest:
                continue
            if mirror.pull_from_mirror == "digest-only" and not by_digest:
                continue
            if mirror.pull_from_mirror == "tag-only" and by_digest:
                continue
            host, repo = _rewrite(entry.prefix, mirror.location, ref)
            result.append(Endpoint(host, repo, mirror.insecure, mirror=True))
        if not entry.blocked:
            if entry.location:
                host, repo = _rewrite(entry.prefix, entry.location, ref)
            else:
                host, repo = origin
            result.append(Endpoint(host, repo, entry.insecure, mirror=False))
        return result


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    if host.startswith("["):
        name = host[1 : host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin(ref: Reference) -> tuple[str, str]:
    host = DOCKER_HUB_ENDPOINT if ref.domain == DOCKER_HUB else ref.domain
    return host, ref.path


def _match_len(prefix: str, ref: Reference) -> int:
    name = ref.name
    if prefix.startswith("*."):
        return len(prefix) if ref.domain.endswith(prefix[1:]) else -1
    if name == prefix or name.startswith(prefix + "/") or name.startswith(prefix + ":"):
        return len(prefix)
    return -1


def _rewrite(prefix: str, location: str, ref: Reference) -> tuple[str, str]:
    """Swap ``prefix`` for ``location`` in the repository name; split host from path."""
    if prefix.startswith("*."):
        full = location.rstrip("/") + "/" + ref.path
    else:
        full = location.rstrip("/") + ref.name[len(prefix) :]
    host, _, path = full.partition("/")
    if host == DOCKER_HUB:
        host = DOCKER_HUB_ENDPOINT
    return host, path


def load_registries_conf(path: Path) -> RegistriesConf:
    """Read ``path``; a missing file means no mirrors.

    Raises ConfigError naming the file and key for bad TOML, unknown keys, wrong types.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return RegistriesConf()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
    return parse_registries_conf(text, str(path))


def parse_registries_conf(text: str, source: str = "registries.conf") -> RegistriesConf:
    """Parse registries.conf text. Raises ConfigError naming the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    for key in data:
        if key != "registry" and key not in _IGNORED_TOP:
            raise ConfigError(f"{source}: {key}: unknown key")
    raw = data.get("registry", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: registry: expected [[registry]] tables")
    entries = tuple(_entry(item, f"{source}: registry[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for entry in entries:
        if entry.prefix in seen:
            raise ConfigError(f"{source}: registry prefix {entry.prefix!r} defined twice")
        seen.add(entry.prefix)
    return RegistriesConf(entries)


def _entry(item: Any, where: str) -> RegistryEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a table")
    _no_unknown(item, _REGISTRY_KEYS, where)
    location = _str(item, "location", where)
    prefix = _str(item, "prefix", where) or location
    if not prefix:
        raise ConfigError(f"{where}: prefix or location is required")
    if prefix.startswith("*.") and location and "/" in location.rstrip("/"):
        raise ConfigError(f"{where}.location: a wildcard prefix needs a bare host location")
    raw_mirrors = item.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise ConfigError(f"{where}.mirror: expected [[registry.mirror]] tables")
    mirrors = []
    for j, m in enumerate(raw_mirrors):
        mwhere = f"{where}.mirror[{j}]"
        if not isinstance(m, dict):
            raise ConfigError(f"{mwhere}: expected a table")
        _no_unknown(m, _MIRROR_KEYS, mwhere)
        mloc = _str(m, "location", mwhere)
        if not mloc:
            raise ConfigError(f"{mwhere}.location: required")
        pull_from = _str(m, "pull-from-mirror", mwhere) or "all"
        if pull_from not in _PULL_FROM:
            raise ConfigError(f"{mwhere}.pull-from-mirror: {pull_from!r} not one of {_PULL_FROM}")
        mirrors.append(Mirror(mloc, _bool(m, "insecure", mwhere), pull_from))
    return RegistryEntry(
        prefix=prefix,
        location=location,
        insecure=_bool(item, "insecure", where),
        blocked=_bool(item, "blocked", where),
        mirror_by_digest_only=_bool(item, "mirror-by-digest-only", where),
        mirrors=tuple(mirrors),
    )


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")


def _str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a string")
    return value


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false")
    return value
