"""Manifests, indexes and image configs: parsed strictly enough to be safe.

Docker schema2 and OCI manifests are read the same way; manifest lists and OCI
indexes are resolved to this host's platform. Schema1 is refused (registries
converted away from it years ago, and it has no config digest to give an ID).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from vmcri.errors import InvalidArgument, NotFound, ProtocolError
from vmcri.images.reference import is_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20
MAX_LAYERS = 256

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms, e.g. ("linux", "amd64")."""
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what}: not valid JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return value


def _descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: descriptor is not an object")
    digest, size, media = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ProtocolError(f"{what}: digest {digest!r} is not sha256:<hex>")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{what}: size {size!r} is not a non-negative integer")
    if not isinstance(media, str):
        raise ProtocolError(f"{what}: mediaType is not a string")
    return Descriptor(media, digest, size)


def media_type_of(raw: bytes, header: str) -> str:
    """The manifest's type: the Content-Type if it names one we know, else its mediaType."""
    header = header.split(";")[0].strip()
    if header in INDEX_TYPES or header in MANIFEST_TYPES:
        return header
    doc = _json(raw, "manifest")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def select_platform(raw: bytes, want: tuple[str, str] | None = None) -> Descriptor:
    """The index entry for ``want`` (default: this host).

    Raises NotFound when the index has no entry for the platform.
    """
    os_name, arch = want or host_platform()
    doc = _json(raw, "image index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ProtocolError("image index: manifests is not a list")
    seen = []
    for i, entry in enumerate(entries):
        desc = _descriptor(entry, f"image index manifests[{i}]")
        plat = entry.get("platform") or {}
        if not isinstance(plat, dict):
            continue
        seen.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if plat.get("os") == os_name and plat.get("architecture") == arch:
            return desc
    raise NotFound(
        f"image index has no manifest for {os_name}/{arch} (it has: {', '.join(seen) or 'none'})"
    )


def parse_manifest(raw: bytes, media_type: str) -> Manifest:
    """Parse an image manifest (OCI or Docker schema2).

    Raises InvalidArgument for schema1 or unknown types, ProtocolError for bad documents.
    """
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"manifest media type {media_type!r} is not supported")
    doc = _json(raw, "manifest")
    config = _descriptor(doc.get("config"), "manifest config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise ProtocolError("manifest: layers is not a list")
    if len(layers_raw) > MAX_LAYERS:
        raise ProtocolError(f"manifest: {len(layers_raw)} layers, more than {MAX_LAYERS}")
    layers = tuple(_descriptor(v, f"manifest layers[{i}]") for i, v in enumerate(layers_raw))
    return Manifest(config, layers)


@dataclass(frozen=True)
class ImageConfig:
    diff_ids: tuple[str, ...]
    config: dict[str, Any]  # the "config" object: Env, Cmd, Entrypoint, User, ...
    raw: dict[str, Any]


def parse_config(raw: bytes, layer_count: int) -> ImageConfig:
    """Parse an image config and check its diff_ids against the manifest's layers.

    Raises ProtocolError when the config does not match the manifest.
    """
    doc = _json(raw, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ProtocolError("image config: rootfs.diff_ids missing")
    diff_ids = rootfs["diff_ids"]
    for d in diff_ids:
        if not isinstance(d, str) or not is_digest(d):
            raise ProtocolError(f"image config: diff_id {d!r} is not sha256:<hex>")
    if len(diff_ids) != layer_count:
        raise ProtocolError(
            f"image config lists {len(diff_ids)} diff_ids for {layer_count} manifest layers"
        )
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ProtocolError("image config: config is not an object")
    return ImageConfig(tuple(diff_ids), config, doc)
