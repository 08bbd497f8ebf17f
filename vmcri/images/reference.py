"""Image references, normalised the way users of docker and crictl expect.

``busybox`` means ``docker.io/library/busybox:latest``; a first component with a
dot, a colon or equal to ``localhost`` is a registry host; a digest
(``name@sha256:<hex>`` or ``name:tag@sha256:<hex>``) pins the content and wins
over the tag when fetching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmcri.errors import InvalidReference

DOCKER_HUB = "docker.io"
# docker.io is a name; its API endpoint has another host name.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A normalised image reference."""

    domain: str  # "docker.io", "registry.k8s.io", "127.0.0.1:5000"
    path: str  # "library/busybox"
    tag: str | None = None
    digest: str | None = None  # "sha256:<hex>"

    @property
    def name(self) -> str:
        """``domain/path``: the repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def fetch_ref(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned."""
        return self.digest or self.tag or "latest"

    def tagged(self) -> str | None:
        """``name:tag``, the repo tag this reference contributes, if it has a tag."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> str:
        """``name@digest``: a repo digest."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``.

    Raises InvalidReference naming what is wrong (empty, bad component, bad tag,
    bad digest, upper case in the repository, too long).
    """
    if not text or text != text.strip():
        raise InvalidReference(f"image reference {text!r}: empty or surrounded by spaces")
    rest = text
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidReference(
                f"image reference {text!r}: digest {digest!r} is not sha256:<64 lowercase hex>"
            )
    tag: str | None = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"image reference {text!r}: tag {tag!r} is not valid")
    parts = rest.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, path_parts = parts[0], parts[1:]
        if not _HOST.match(domain):
            raise InvalidReference(f"image reference {text!r}: registry host {domain!r} invalid")
    else:
        domain, path_parts = DOCKER_HUB, parts
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and len(path_parts) == 1:
        path_parts = ["library", *path_parts]
    for part in path_parts:
        if not _COMPONENT.match(part):
            raise InvalidReference(
                f"image reference {text!r}: repository component {part!r} must be lowercase "
                "letters and digits separated by '.', '_', '__' or '-'"
            )
    path = "/".join(path_parts)
    if len(domain) + 1 + len(path) > MAX_NAME:
        raise InvalidReference(f"image reference {text!r}: name longer than {MAX_NAME}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest)
