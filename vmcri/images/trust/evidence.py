"""What a pull verified, kept with the image, and whether it meets another policy.

kubelet does not pull an image that is present (``IfNotPresent``), so an image pulled
for a namespace with a relaxed policy (or before a policy was written) would otherwise
run in a pod whose namespace's policy refuses it. Each pull therefore records, on the
image, the reference it was pulled as, the top manifest digest the signatures name and
each signature that met a requirement: its kind, the key that made it (a GPG primary
fingerprint, or the sha256 of a sigstore public key) and the reference it claims. At
CreateContainer the requirements the pod's namespace's policy sets for that reference
are checked against this record alone, with no I/O; only what the record cannot answer
needs the signatures fetched again.

A recorded signature stands for a check the puller made (signature verified by the key,
payload naming exactly this digest); what remains to decide is per policy: is that key
among the requirement's keys, and does the claimed reference satisfy its
``signedIdentity`` for the reference the container names. That is the same question
``ImageTrust.check`` answers after verifying, so the two agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vmcri.images.reference import Reference
from vmcri.images.trust import sigstore
from vmcri.images.trust.policy import AcceptAnything, Reject, Requirement, SignedBy

SignatureKind = Literal["simple-signing", "sigstore"]
MAX_VERIFICATIONS = 32
"""Per image: a reference pulled again replaces its entry, the oldest others go first."""
MAX_SIGNATURES = 16
"""Per verification: one per requirement met, and a scope has few requirements."""


@dataclass(frozen=True)
class AcceptedSignature:
    """One signature the puller verified and found to meet a requirement."""

    kind: SignatureKind
    key: str  # GPG primary fingerprint, or sigstore.key_id of the public key
    claimed: str  # the docker-reference the signed payload names

    def describe(self) -> str:
        return f"{self.kind} by {self.key} for {self.claimed}"


@dataclass(frozen=True)
class Verification:
    """One pull's check: ``reference`` as asked for, ``digest`` of its top manifest."""

    reference: str
    digest: str
    signatures: tuple[AcceptedSignature, ...] = ()

    @classmethod
    def of(cls, ref: Reference, digest: str, accepted: Iterable[AcceptedSignature]) -> Verification:
        """What a check of ``ref`` at ``digest`` proved: each signature once, bounded (a
        record that cannot answer only costs a fetch at CreateContainer)."""
        return cls(str(ref), digest, tuple(dict.fromkeys(accepted))[:MAX_SIGNATURES])

    @classmethod
    def from_json(cls, doc: Any) -> Verification:
        """From ``dataclasses.asdict``'s form. Raises ValueError, TypeError or KeyError
        for anything else (the store's reader turns those into StateCorrupt)."""
        sigs = []
        for sig in doc["signatures"][:MAX_SIGNATURES]:
            if sig["kind"] not in ("simple-signing", "sigstore"):
                raise ValueError(f"unknown signature kind {sig['kind']!r}")
            sigs.append(AcceptedSignature(sig["kind"], str(sig["key"]), str(sig["claimed"])))
        return cls(str(doc["reference"]), str(doc["digest"]), tuple(sigs))


def merge(old: Iterable[Verification], new: Iterable[Verification]) -> tuple[Verification, ...]:
    """``old`` then ``new``, one entry per (reference, digest), newest last, bounded."""
    out: dict[tuple[str, str], Verification] = {}
    for v in (*old, *new):
        out.pop((v.reference, v.digest), None)
        out[(v.reference, v.digest)] = v
    return tuple(out.values())[-MAX_VERIFICATIONS:]


def unmet(
    req: Requirement, ref: Reference, digest: str, verified: Iterable[Verification]
) -> str | None:
    """None when a recorded signature of ``digest`` meets ``req`` for ``ref``, else why not.

    Any reference's verification of the same digest may serve (a signature claiming
    ``app:1`` for a digest meets ``matchRepoDigestOrExact`` of ``app@<digest>``): the
    identity rule, not the reference it was first pulled as, decides.
    """
    if isinstance(req, AcceptAnything):
        return None
    if isinstance(req, Reject):
        return "the policy rejects every image in this scope"
    if isinstance(req, SignedBy):
        kind: SignatureKind = "simple-signing"
        keys = set(req.keyring.fingerprints)
    else:
        kind = "sigstore"
        keys = {sigstore.key_id(k) for k in req.keys}
    for v in verified:
        if v.digest != digest:
            continue
        for sig in v.signatures:
            if sig.kind == kind and sig.key in keys and req.identity.matches(ref, sig.claimed):
                return None
    return f"no {kind} signature of {digest} by its keys for {ref} was verified at a pull"


def digests_of(
    ref: Reference, repo_digests: Iterable[str], verified: Iterable[Verification]
) -> list[str]:
    """The top manifest digests ``ref`` was pulled as, newest first (a digest reference:
    that digest). Only the image's own repo digests count: a verification naming any
    other digest says nothing about this image's content."""
    own = [d.rsplit("@", 1)[1] for d in repo_digests if d.startswith(ref.name + "@")]
    if ref.digest is not None:
        return [ref.digest] if ref.digest in own else []
    out = [v.digest for v in reversed(list(verified)) if v.reference == str(ref)]
    out += reversed(own)  # records written before verifications were kept
    return [d for d in dict.fromkeys(out) if d in own]
