"""A tenant whose namespace may pull what it likes tries to get its image into another
namespace's pods through the image store (kubelet's IfNotPresent does not pull again).

The tenant controls its namespace's policy (its own sigstore key trusted, or anything
accepted), the image, its tags, and the signatures stored beside it, including a real
signature by the trusted key copied from another image. None of that may make
CreateContainer in the strict namespace accept the image: recorded signatures count
only under the strict policy's own keys and for the digest they name, and signatures
fetched again are verified as a pull verifies them."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.support.signing import (
    AttachedSignatures,
    cosign_payload,
    new_sigstore_key,
    public_pem,
    sigstore_sign,
)
from vmcri.errors import SignatureRefused
from vmcri.images.auth import Deadline
from vmcri.images.content_store import ImageRecord
from vmcri.images.reference import Reference, parse_reference
from vmcri.images.registry_client import RegistryClient
from vmcri.images.trust import sigstore
from vmcri.images.trust.admission import Admission
from vmcri.images.trust.evidence import AcceptedSignature, Verification
from vmcri.images.trust.policy import Policy, parse_policy
from vmcri.images.trust.registries_d import SignatureStores, StorageConfig
from vmcri.images.trust.verifier import ImageTrust

TRUSTED, TENANT = new_sigstore_key("p256"), new_sigstore_key("p256")
NAME = "reg.test/team/app:1"
VICTIM_DIGEST = "sha256:" + hashlib.sha256(b"the release image").hexdigest()
EVIL_DIGEST = "sha256:" + hashlib.sha256(b"the tenant's image").hexdigest()


def _sigstore_policy(key: object, source: str) -> Policy:
    pem = base64.b64encode(public_pem(key)).decode()  # type: ignore[arg-type]
    doc = {"default": [{"type": "sigstoreSigned", "keyData": pem}]}
    return parse_policy(json.dumps(doc).encode(), source, Path("/"))


def _signed(key: object, digest: str, claim: str = NAME) -> tuple[bytes, str]:
    payload = cosign_payload(claim, digest)
    return payload, sigstore_sign(key, payload)  # type: ignore[arg-type]


@dataclass
class _Node:
    """A strict namespace's admission; the tenant's image as the store holds it, and the
    signatures the registry serves beside it."""

    record: ImageRecord
    attached: list[tuple[bytes, str]] = field(default_factory=list)

    def admit(self) -> None:
        strict = _sigstore_policy(TRUSTED, "strict.json")
        stores = SignatureStores(StorageConfig(use_sigstore_attachments=True))
        trust = ImageTrust(strict, stores)

        def reverify(
            ref: Reference, digest: str, policy: Policy, deadline: Deadline
        ) -> tuple[AcceptedSignature, ...]:
            client = cast(RegistryClient, AttachedSignatures(digest, self.attached))
            return trust.check(ref, digest, client, policy, deadline)

        def update(image_id: str, change: object) -> ImageRecord:
            raise AssertionError("nothing may be recorded for a refused image")

        Admission(trust, reverify, update).admit(self.record, NAME, "")


def _tenant_image(*verified: Verification) -> ImageRecord:
    return ImageRecord(
        id="sha256:" + hashlib.sha256(b"config").hexdigest(),
        repo_tags=(NAME,),
        repo_digests=(parse_reference(NAME).with_digest(EVIL_DIGEST),),
        manifest_digest=EVIL_DIGEST,
        layers=(),
        size=1,
        created_ns=1,
        verified=verified,
    )


def test_a_signature_by_the_tenants_own_trusted_key_does_not_cross_namespaces() -> None:
    # Pulled for the tenant's namespace, whose policy trusts the tenant's key.
    own = AcceptedSignature("sigstore", sigstore.key_id(TENANT.public_key()), NAME)
    node = _Node(_tenant_image(Verification(NAME, EVIL_DIGEST, (own,))))
    node.attached = [_signed(TENANT, EVIL_DIGEST)]
    with pytest.raises(SignatureRefused, match="does not verify with any of the policy"):
        node.admit()


def test_a_trusted_signature_of_another_image_is_not_replayed() -> None:
    node = _Node(_tenant_image(Verification(NAME, EVIL_DIGEST)))  # pulled where anything goes
    node.attached = [_signed(TRUSTED, VICTIM_DIGEST)]  # a real release signature, other image
    with pytest.raises(SignatureRefused, match=VICTIM_DIGEST.split(":")[1][:12]):
        node.admit()


def test_a_recorded_trusted_signature_counts_only_for_its_digest() -> None:
    # A verification of the victim's digest under the same name (as a record might hold
    # were verifications ever merged across images) says nothing of the tenant's digest.
    release = AcceptedSignature("sigstore", sigstore.key_id(TRUSTED.public_key()), NAME)
    node = _Node(_tenant_image(Verification(NAME, VICTIM_DIGEST, (release,))))
    with pytest.raises(SignatureRefused, match="no sigstore signature is attached"):
        node.admit()


def test_a_signature_for_another_name_does_not_admit_the_tenants_name() -> None:
    node = _Node(_tenant_image(Verification(NAME, EVIL_DIGEST)))
    node.attached = [_signed(TRUSTED, EVIL_DIGEST, claim="reg.test/team/other:1")]
    with pytest.raises(SignatureRefused, match=r"signed for 'reg\.test/team/other:1'"):
        node.admit()
