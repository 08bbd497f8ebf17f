"""``signedIdentity``: how the reference a signature claims must relate to the one pulled.

The image's identity is the reference the caller asked for (kubelet's, the CLI's), never
the mirror it came from: a signature says "this digest is ``registry.example/app:1``",
and a mirror serving it does not change which image was asked for. The kinds, as
containers-policy.json(5) defines them::

    matchExact              same repository and the same tag or digest
    matchRepoDigestOrExact  (the default) pulled by digest: same repository; else matchExact
    matchRepository         same repository, any tag or digest
    exactReference          the signature names exactly ``dockerReference``
    exactRepository         the signature names the repository ``dockerRepository``
    remapIdentity           the pulled reference with ``prefix`` replaced by ``signedPrefix``,
                            then matchRepoDigestOrExact

A signature's reference that names no tag or digest never matches exactly (as in
containers/image), so "any tag of the repository" is only ever said by the policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from vmcri.errors import InvalidReference
from vmcri.images.reference import Reference, parse_reference

IdentityKind = Literal[
    "matchExact",
    "matchRepoDigestOrExact",
    "matchRepository",
    "exactReference",
    "exactRepository",
    "remapIdentity",
]
IDENTITY_KINDS: tuple[str, ...] = get_args(IdentityKind)

_HAS_TAG = re.compile(r":[^/]*$")


@dataclass(frozen=True)
class Named:
    """A docker reference as written, with whether it named a tag or digest at all."""

    ref: Reference
    name_only: bool

    def __str__(self) -> str:
        return self.ref.name if self.name_only else str(self.ref)


def parse_named(text: str) -> Named:
    """Parse a reference keeping "no tag" apart from ":latest". Raises InvalidReference."""
    ref = parse_reference(text)
    before_digest = text.rsplit("@", 1)[0] if "@" in text else text
    name_only = ref.digest is None and not _HAS_TAG.search(before_digest)
    return Named(ref, name_only)


@dataclass(frozen=True)
class SignedIdentity:
    """One ``signedIdentity`` object, validated."""

    kind: IdentityKind = "matchRepoDigestOrExact"
    docker_reference: str = ""  # exactReference
    docker_repository: str = ""  # exactRepository
    prefix: str = ""  # remapIdentity
    signed_prefix: str = ""  # remapIdentity

    def describe(self) -> str:
        extra = self.docker_reference or self.docker_repository
        if self.kind == "remapIdentity":
            extra = f"{self.prefix} -> {self.signed_prefix}"
        return f"{self.kind}({extra})" if extra else self.kind

    def matches(self, image: Reference, signed: str) -> bool:
        """Whether a signature claiming ``signed`` vouches for pulling ``image``.

        A claimed reference that does not parse matches nothing.
        """
        try:
            claim = parse_named(signed)
        except InvalidReference:
            return False
        if self.kind == "matchExact":
            return _exact(image, claim)
        if self.kind == "matchRepoDigestOrExact":
            return _repo_digest_or_exact(image, claim)
        if self.kind == "matchRepository":
            return claim.ref.name == image.name
        if self.kind == "exactReference":
            want = parse_named(self.docker_reference)
            return not claim.name_only and str(claim.ref) == str(want.ref)
        if self.kind == "exactRepository":
            return claim.ref.name == parse_named(self.docker_repository).ref.name
        remapped = remap(image, self.prefix, self.signed_prefix)
        return _repo_digest_or_exact(remapped, claim)


def _exact(image: Reference, claim: Named) -> bool:
    return not claim.name_only and str(claim.ref) == str(image)


def _repo_digest_or_exact(image: Reference, claim: Named) -> bool:
    if image.digest is not None:
        return claim.ref.name == image.name
    return _exact(image, claim)


def prefix_matches(text: str, prefix: str) -> bool:
    """``prefix`` covers ``text`` up to a component, tag or digest boundary."""
    return text == prefix or (text.startswith(prefix) and text[len(prefix)] in "/:@")


def remap(image: Reference, prefix: str, signed_prefix: str) -> Reference:
    """``image`` with ``prefix`` replaced by ``signed_prefix`` (unchanged when not prefixed).

    A result that is not a valid reference leaves ``image`` unchanged, so it can only
    fail to match.
    """
    text = str(image)
    if not prefix_matches(text, prefix):
        return image
    try:
        return parse_reference(signed_prefix + text[len(prefix) :])
    except InvalidReference:
        return image
