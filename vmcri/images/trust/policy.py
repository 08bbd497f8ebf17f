"""containers-policy.json(5): which signatures an image needs, by transport and scope.

Parsed once, strictly: an unknown key, a duplicate key, a wrong type, an unreadable
key file or a requirement vmcri cannot check is a ConfigError naming where it is
(``transports.docker["example.com/app"][0].keyPath: ...``), never "accept". The
supported requirements::

    {"type": "insecureAcceptAnything"}
    {"type": "reject"}
    {"type": "signedBy", "keyType": "GPGKeys", "keyPath"|"keyPaths"|"keyData": ...,
     "signedIdentity": {...}}
    {"type": "sigstoreSigned", "keyPath"|"keyPaths"|"keyData"|"keyDatas": ...,
     "signedIdentity": {...}}

Every requirement of a scope's list must be met. vmcri pulls only over the ``docker``
transport; the other transports' sections are checked but otherwise ignored, so a
node-wide policy shared with Podman or skopeo loads unchanged.

Scopes of the ``docker`` transport are matched as containers/image does, most
specific first, stopping at the first that is present::

    registry.example:5000/ns/app:1   the exact reference (name@digest for a digest)
    registry.example:5000/ns/app     the repository
    registry.example:5000/ns         each enclosing namespace
    registry.example:5000            the registry
    *.example                        wildcards of the host name (port left out)
    ""                               the transport's default
    then the policy's "default"
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmcri.errors import ConfigError, InvalidReference
from vmcri.images.reference import Reference
from vmcri.images.trust.gpg import Keyring, build_keyring
from vmcri.images.trust.identity import IDENTITY_KINDS, Named, SignedIdentity, parse_named
from vmcri.images.trust.sigstore import PublicKey, load_public_keys

MAX_POLICY_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 1 << 20
MAX_REQUIREMENTS = 4096  # in the whole file, every scope together
TRANSPORTS = (
    "docker",
    "atomic",
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
)
_HOSTNAME = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_HOST_PORT = re.compile(_HOSTNAME.pattern[:-1] + r"(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class AcceptAnything:
    def describe(self) -> str:
        return "insecureAcceptAnything"


@dataclass(frozen=True)
class Reject:
    def describe(self) -> str:
        return "reject"


@dataclass(frozen=True)
class SignedBy:
    """GPG simple signing by one of ``keyring``'s keys."""

    keyring: Keyring
    identity: SignedIdentity
    keys_from: str  # "keyPath /etc/pki/release.gpg", for messages

    def describe(self) -> str:
        return f"signedBy GPGKeys ({self.keys_from}, identity {self.identity.describe()})"


@dataclass(frozen=True)
class SigstoreSigned:
    """A sigstore signature by one of ``keys``."""

    keys: tuple[PublicKey, ...]
    identity: SignedIdentity
    keys_from: str

    def describe(self) -> str:
        return f"sigstoreSigned ({self.keys_from}, identity {self.identity.describe()})"


Requirement = AcceptAnything | Reject | SignedBy | SigstoreSigned


@dataclass(frozen=True)
class Policy:
    """A parsed policy; ``docker`` maps a scope ("" for the transport) to requirements."""

    source: str
    default: tuple[Requirement, ...]
    docker: dict[str, tuple[Requirement, ...]] = field(default_factory=dict)

    def lookup(self, ref: Reference) -> tuple[str, tuple[Requirement, ...]]:
        """The scope that applies to ``ref`` (as written in the file) and its requirements."""
        for scope in docker_scopes(ref):
            if scope in self.docker:
                return f'transports.docker["{scope}"]', self.docker[scope]
        if "" in self.docker:
            return 'transports.docker[""]', self.docker[""]
        return "default", self.default

    @functools.cached_property
    def accepts_everything(self) -> bool:
        """Computed once: CreateContainer asks it for every container (the default's cost)."""
        every = [self.default, *self.docker.values()]
        return all(isinstance(r, AcceptAnything) for reqs in every for r in reqs)

    def summary(self) -> str:
        """One line for ``vmcri doctor`` and the start-up log."""
        if self.accepts_everything:
            return f"{self.source}: every image accepted (insecureAcceptAnything)"
        default = ", ".join(r.describe() for r in self.default)
        return f"{self.source}: default {default}; {len(self.docker)} docker scope(s)"


ACCEPT_ALL = Policy("no policy file", (AcceptAnything(),))


def docker_scopes(ref: Reference) -> list[str]:
    """The scopes that may name ``ref``, most specific first (the "" default excluded)."""
    identity = ref.with_digest(ref.digest) if ref.digest else f"{ref.name}:{ref.tag}"
    scopes = [identity]
    name = ref.name
    while "/" in name:
        scopes.append(name)
        name = name.rsplit("/", 1)[0]
    scopes.append(name)  # the registry host[:port]
    host = name.split(":", 1)[0] if not name.startswith("[") else ""
    while "." in host:
        host = host.split(".", 1)[1]
        scopes.append("*." + host)
    return scopes


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_policy(raw: bytes, source: str, base_dir: Path) -> Policy:
    """Parse a policy file's bytes; relative key paths are relative to ``base_dir``.

    Raises ConfigError naming the key for anything unknown, malformed or unsupported.
    """
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc
    parser = _Parser(source, base_dir)
    obj = parser.object(doc, "", {"default", "transports"})
    if "default" not in obj:
        raise ConfigError(f"{source}: default: missing (containers-policy.json(5) requires it)")
    default = parser.requirements(obj["default"], "default")
    docker: dict[str, tuple[Requirement, ...]] = {}
    transports = parser.object(obj.get("transports", {}), "transports", None)
    for transport, scopes_doc in transports.items():
        where = f"transports.{transport}"
        if transport not in TRANSPORTS:
            raise ConfigError(f"{source}: {where}: unknown transport")
        scopes = parser.object(scopes_doc, where, None)
        for scope, reqs in scopes.items():
            at = f'{where}["{scope}"]'
            if transport == "docker":
                check_docker_scope(scope, f"{source}: {at}")
            parsed = parser.requirements(reqs, at)
            if transport == "docker":
                docker[scope] = parsed
    return Policy(source, default, docker)


def check_docker_scope(scope: str, where: str) -> None:
    """Raises ConfigError unless ``scope`` is "", a wildcard host or an explicit reference."""
    if scope == "":
        return
    if scope.startswith("*."):
        if not _HOSTNAME.match(scope[2:]):
            raise ConfigError(f"{where}: wildcard scope must be *.<host name> without a port")
        return
    if "/" not in scope:
        if not _HOST_PORT.match(scope) and scope != "localhost":
            raise ConfigError(f"{where}: not a registry host[:port]")
        return
    try:
        named = parse_named(scope)
    except InvalidReference as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc
    if str(named) != scope:
        raise ConfigError(f"{where}: scope must be written in full, as {str(named)!r}")


class _Parser:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.count = 0

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def object(self, value: Any, where: str, keys: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where or "<top>", "expected a JSON object")
        if keys is not None:
            for key in value:
                if key not in keys:
                    name = f"{where}.{key}" if where else key
                    raise self.fail(name, f"unknown key (known here: {', '.join(sorted(keys))})")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "expected a non-empty string")
        return value

    def requirements(self, value: Any, where: str) -> tuple[Requirement, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list of requirements")
        self.count += len(value)
        if self.count > MAX_REQUIREMENTS:
            raise self.fail(where, f"more than {MAX_REQUIREMENTS} requirements in the file")
        return tuple(self.requirement(item, f"{where}[{i}]") for i, item in enumerate(value))

    def requirement(self, value: Any, where: str) -> Requirement:
        kind = self.object(value, where, None).get("type")
        if kind == "insecureAcceptAnything":
            self.object(value, where, {"type"})
            return AcceptAnything()
        if kind == "reject":
            self.object(value, where, {"type"})
            return Reject()
        if kind == "signedBy":
            return self.signed_by(value, where)
        if kind == "sigstoreSigned":
            return self.sigstore(value, where)
        if kind == "signedBaseLayer":
            raise self.fail(f"{where}.type", "signedBaseLayer is not supported by vmcri")
        raise self.fail(f"{where}.type", f"unknown requirement type {kind!r}")

    def signed_by(self, value: dict[str, Any], where: str) -> SignedBy:
        keys = {"type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"}
        self.object(value, where, keys)
        key_type = value.get("keyType")
        if key_type != "GPGKeys":
            raise self.fail(
                f"{where}.keyType",
                f'{key_type!r} is not supported (vmcri checks "GPGKeys" only)',
            )
        blobs, keys_from = self.key_material(value, where, ("keyPath", "keyPaths", "keyData"))
        keyring = build_keyring(blobs, f"{self.source}: {where}.{keys_from.split()[0]}")
        identity = self.identity(value.get("signedIdentity"), f"{where}.signedIdentity")
        return SignedBy(keyring, identity, keys_from)

    def sigstore(self, value: dict[str, Any], where: str) -> SigstoreSigned:
        keyless = (
            "fulcio",
            "rekorPublicKeyPath",
            "rekorPublicKeyPaths",
            "rekorPublicKeyData",
            "rekorPublicKeyDatas",
            "pki",
        )
        for key in keyless:
            if key in value:
                raise self.fail(
                    f"{where}.{key}",
                    "keyless sigstore verification (Fulcio certificates, Rekor log) is not "
                    "supported: it cannot be checked offline here; sign with a key pair and "
                    "name its public key in keyPath or keyData",
                )
        names = ("keyPath", "keyPaths", "keyData", "keyDatas")
        self.object(value, where, {"type", "signedIdentity", *names})
        blobs, keys_from = self.key_material(value, where, names)
        public: list[PublicKey] = []
        for blob in blobs:
            public += load_public_keys(blob, f"{self.source}: {where}.{keys_from.split()[0]}")
        identity = self.identity(value.get("signedIdentity"), f"{where}.signedIdentity")
        return SigstoreSigned(tuple(public), identity, keys_from)

    def key_material(
        self, value: dict[str, Any], where: str, names: tuple[str, ...]
    ) -> tuple[list[bytes], str]:
        """The key bytes of exactly one of ``names``, and a description for messages."""
        present = [n for n in names if n in value]
        if len(present) != 1:
            raise self.fail(where, f"exactly one of {', '.join(names)} is required")
        name = present[0]
        at = f"{where}.{name}"
        raw = value[name]
        items: list[Any] = raw if name.endswith("s") else [raw]
        if name.endswith("s") and (not isinstance(raw, list) or not raw):
            raise self.fail(at, "expected a non-empty list")
        blobs: list[bytes] = []
        shown: list[str] = []
        for i, item in enumerate(items):
            text = self.string(item, f"{at}[{i}]" if name.endswith("s") else at)
            if name.startswith("keyData"):
                try:
                    blobs.append(base64.b64decode(text, validate=True))
                except (binascii.Error, ValueError) as exc:
                    raise self.fail(at, "not base64") from exc
                shown.append("inline")
            else:
                path = Path(text) if Path(text).is_absolute() else self.base_dir / text
                blobs.append(self.read_key(path, at))
                shown.append(str(path))
        return blobs, f"{name} {', '.join(shown)}"

    def read_key(self, path: Path, where: str) -> bytes:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise self.fail(where, f"cannot read {path}: {exc.strerror}") from exc
        if len(data) > MAX_KEY_FILE_BYTES:
            raise self.fail(where, f"{path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        return data

    def identity(self, value: Any, where: str) -> SignedIdentity:
        if value is None:
            return SignedIdentity()
        kind = self.object(value, where, None).get("type")
        if kind not in IDENTITY_KINDS:
            raise self.fail(f"{where}.type", f"unknown signedIdentity type {kind!r}")
        if kind == "exactReference":
            self.object(value, where, {"type", "dockerReference"})
            ref = self.string(value.get("dockerReference"), f"{where}.dockerReference")
            named = self.named(ref, f"{where}.dockerReference")
            if named.name_only:
                raise self.fail(f"{where}.dockerReference", "must name a tag or digest")
            return SignedIdentity(kind, docker_reference=ref)
        if kind == "exactRepository":
            self.object(value, where, {"type", "dockerRepository"})
            repo = self.string(value.get("dockerRepository"), f"{where}.dockerRepository")
            if not self.named(repo, f"{where}.dockerRepository").name_only:
                raise self.fail(f"{where}.dockerRepository", "must be a repository, no tag")
            return SignedIdentity(kind, docker_repository=repo)
        if kind == "remapIdentity":
            self.object(value, where, {"type", "prefix", "signedPrefix"})
            prefixes = []
            for key in ("prefix", "signedPrefix"):
                text = self.string(value.get(key), f"{where}.{key}")
                last = text.rsplit("/", 1)[-1] if "/" in text else ""
                if text.startswith("*.") or "@" in text or ":" in last:
                    raise self.fail(
                        f"{where}.{key}",
                        "must be a host[:port], namespace or repository, no tag or digest",
                    )
                check_docker_scope(text, f"{self.source}: {where}.{key}")
                prefixes.append(text)
            return SignedIdentity(kind, prefix=prefixes[0], signed_prefix=prefixes[1])
        self.object(value, where, {"type"})
        return SignedIdentity(kind)

    def named(self, text: str, where: str) -> Named:
        try:
            return parse_named(text)
        except InvalidReference as exc:
            raise self.fail(where, exc.message) from exc


def load_policy(path: Path) -> Policy | None:
    """The policy at ``path``, or None when the file does not exist.

    Raises ConfigError for an unreadable or invalid file.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signature policy: {exc.strerror}") from exc
    return parse_policy(raw, str(path), path.parent)
