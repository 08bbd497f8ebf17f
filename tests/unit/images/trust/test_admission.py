"""CreateContainer's question: may this stored image run in a pod of this namespace?"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.signing import new_sigstore_key, public_pem
from vmcri.errors import RegistryError, SignatureRefused
from vmcri.images.auth import Deadline
from vmcri.images.content_store import ImageRecord
from vmcri.images.reference import Reference
from vmcri.images.trust import sigstore
from vmcri.images.trust.admission import MAX_REFETCHED_NAMES, Admission
from vmcri.images.trust.evidence import AcceptedSignature, Verification
from vmcri.images.trust.policy import ACCEPT_ALL, Policy, parse_policy
from vmcri.images.trust.registries_d import SignatureStores
from vmcri.images.trust.verifier import ImageTrust

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
IMAGE_ID = "sha256:" + hashlib.sha256(b"config").hexdigest()
KEY = new_sigstore_key("p256")
SIGNED = AcceptedSignature("sigstore", sigstore.key_id(KEY.public_key()), "reg.test/team/app:1")


def _strict() -> Policy:
    pem = base64.b64encode(public_pem(KEY)).decode()
    doc = {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"reg.test/team": [{"type": "sigstoreSigned", "keyData": pem}]}},
    }
    return parse_policy(json.dumps(doc).encode(), "strict.json", Path("/"))


def _record(
    *verified: Verification, tags: tuple[str, ...] = ("reg.test/team/app:1",)
) -> ImageRecord:
    return ImageRecord(
        id=IMAGE_ID,
        repo_tags=tags,
        repo_digests=tuple(f"{t.rsplit(':', 1)[0]}@{DIGEST}" for t in tags),
        manifest_digest=DIGEST,
        layers=(),
        size=1,
        created_ns=1,
        verified=verified,
    )


@dataclass
class _Node:
    """An admission over a fake signature fetch and a one-record store."""

    record: ImageRecord
    policy: Policy = field(default_factory=_strict)
    fetched: list[tuple[str, str]] = field(default_factory=list)
    answer: Callable[[], tuple[AcceptedSignature, ...]] = lambda: (SIGNED,)

    def reverify(
        self, ref: Reference, digest: str, policy: Policy, deadline: Deadline
    ) -> tuple[AcceptedSignature, ...]:
        assert policy is self.policy and deadline.remaining() > 0
        self.fetched.append((str(ref), digest))
        return self.answer()

    def update(
        self, image_id: str, change: Callable[[ImageRecord], ImageRecord]
    ) -> ImageRecord | None:
        assert image_id == self.record.id
        self.record = change(self.record)
        return self.record

    def admit(self, requested: str = "reg.test/team/app:1", namespace: str = "") -> None:
        trust = ImageTrust(self.policy, SignatureStores())
        Admission(trust, self.reverify, self.update).admit(self.record, requested, namespace)


def test_no_policy_accepts_without_looking() -> None:
    node = _Node(_record(), ACCEPT_ALL)
    node.admit()
    assert node.fetched == []


def test_a_record_that_answers_needs_no_fetch() -> None:
    node = _Node(_record(Verification("reg.test/team/app:1", DIGEST, (SIGNED,))))
    node.admit()
    node.admit(IMAGE_ID)  # by ID: the names it was pulled as
    assert node.fetched == []


def test_signatures_fetched_again_are_recorded() -> None:
    node = _Node(_record(Verification("reg.test/team/app:1", DIGEST)))
    node.admit()
    assert node.fetched == [("reg.test/team/app:1", DIGEST)]
    assert node.record.verified[-1] == Verification("reg.test/team/app:1", DIGEST, (SIGNED,))
    node.admit()
    assert len(node.fetched) == 1  # the second container is answered by the record


def _refuse() -> tuple[AcceptedSignature, ...]:
    raise SignatureRefused("SignatureValidationFailed: no sigstore signature is attached")


def test_refused_names_the_requirement_and_says_to_pull() -> None:
    node = _Node(_record(), answer=_refuse)
    with pytest.raises(SignatureRefused) as err:
        node.admit()
    message = err.value.message
    assert message.startswith("SignatureValidationFailed: image reg.test/team/app:1")
    assert 'strict.json transports.docker["reg.test/team"][0], sigstoreSigned' in message
    assert "no sigstore signature is attached" in message
    assert "pull the image for this namespace" in message
    assert node.record.verified == ()


def test_an_unreachable_store_refuses() -> None:
    def down() -> tuple[AcceptedSignature, ...]:
        raise RegistryError("connection refused")

    node = _Node(_record(), answer=down)
    with pytest.raises(SignatureRefused, match="could not be fetched: connection refused"):
        node.admit()


def test_reject_is_not_fetched_for() -> None:
    node = _Node(_record(tags=("reg.test/elsewhere/app:1",)))
    with pytest.raises(SignatureRefused, match=r"strict.json default\[0\], reject"):
        node.admit("reg.test/elsewhere/app:1")
    assert node.fetched == []


def test_an_image_id_tries_each_name_within_a_bound() -> None:
    tags = tuple(f"reg.test/team/app{n}:1" for n in range(MAX_REFETCHED_NAMES + 2))
    node = _Node(_record(tags=tags), answer=_refuse)
    with pytest.raises(SignatureRefused):
        node.admit(IMAGE_ID)
    assert len(node.fetched) == MAX_REFETCHED_NAMES


def test_a_namespace_that_names_no_file_has_the_node_policy() -> None:
    node = _Node(_record(tags=("reg.test/elsewhere/app:1",)))
    with pytest.raises(SignatureRefused, match="signature policy of namespace Not_A_Label"):
        node.admit("reg.test/elsewhere/app:1", "Not_A_Label")
    _Node(_record(), ACCEPT_ALL).admit(namespace="../etc")  # no error, no file looked up
