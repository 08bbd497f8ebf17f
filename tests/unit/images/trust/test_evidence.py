"""What a pull verified, kept on the image record, and whether it meets another policy."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from tests.support.signing import new_sigstore_key, public_pem
from vmcri.images.content_store import ImageRecord
from vmcri.images.reference import parse_reference
from vmcri.images.trust import evidence, sigstore
from vmcri.images.trust.evidence import AcceptedSignature, Verification
from vmcri.images.trust.policy import Policy, parse_policy

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"other").hexdigest()
KEY, OTHER_KEY = new_sigstore_key("p256"), new_sigstore_key("ed25519")
KEY_ID = sigstore.key_id(KEY.public_key())


def _policy(identity: dict[str, str] | None = None, key: object = KEY) -> Policy:
    req: dict[str, object] = {
        "type": "sigstoreSigned",
        "keyData": base64.b64encode(public_pem(key)).decode(),  # type: ignore[arg-type]
    }
    if identity:
        req["signedIdentity"] = identity
    doc = {"default": [req]}
    return parse_policy(json.dumps(doc).encode(), "policy.json", Path("/"))


def _verified(claimed: str = "reg.test/team/app:1", digest: str = DIGEST) -> Verification:
    return Verification(
        "reg.test/team/app:1", digest, (AcceptedSignature("sigstore", KEY_ID, claimed),)
    )


def _unmet(policy: Policy, ref: str, digest: str, *verified: Verification) -> str | None:
    _, reqs = policy.lookup(parse_reference(ref))
    return evidence.unmet(reqs[0], parse_reference(ref), digest, verified)


def test_a_recorded_signature_by_the_key_meets_the_requirement() -> None:
    assert _unmet(_policy(), "reg.test/team/app:1", DIGEST, _verified()) is None


def test_another_key_another_digest_or_no_record_does_not() -> None:
    why = _unmet(_policy(key=OTHER_KEY), "reg.test/team/app:1", DIGEST, _verified())
    assert why is not None and "no sigstore signature" in why
    assert _unmet(_policy(), "reg.test/team/app:1", OTHER_DIGEST, _verified()) is not None
    assert _unmet(_policy(), "reg.test/team/app:1", DIGEST) is not None
    unsigned = Verification("reg.test/team/app:1", DIGEST)
    assert _unmet(_policy(), "reg.test/team/app:1", DIGEST, unsigned) is not None


def test_the_policy_identity_rule_decides_for_the_reference_named() -> None:
    policy = _policy()  # matchRepoDigestOrExact
    assert _unmet(policy, "reg.test/team/app:2", DIGEST, _verified()) is not None
    assert _unmet(policy, f"reg.test/team/app@{DIGEST}", DIGEST, _verified()) is None
    assert _unmet(policy, f"reg.test/team/other@{DIGEST}", DIGEST, _verified()) is not None
    by_repo = _policy({"type": "matchRepository"})
    assert _unmet(by_repo, "reg.test/team/app:2", DIGEST, _verified()) is None
    exact = _policy({"type": "exactReference", "dockerReference": "reg.test/team/app:9"})
    assert _unmet(exact, "reg.test/team/app:1", DIGEST, _verified()) is not None


def test_a_simple_signing_record_does_not_meet_a_sigstore_requirement() -> None:
    gpg = Verification(
        "reg.test/team/app:1",
        DIGEST,
        (AcceptedSignature("simple-signing", KEY_ID, "reg.test/team/app:1"),),
    )
    assert _unmet(_policy(), "reg.test/team/app:1", DIGEST, gpg) is not None


def test_merge_keeps_one_entry_per_reference_and_digest_newest_last_bounded() -> None:
    first, again = Verification("a:1", DIGEST), _verified()
    merged = evidence.merge([first, Verification("reg.test/team/app:1", DIGEST)], [again])
    assert merged == (first, again)
    many = [Verification(f"r/{n}:1", DIGEST) for n in range(evidence.MAX_VERIFICATIONS + 5)]
    bounded = evidence.merge([], many)
    assert len(bounded) == evidence.MAX_VERIFICATIONS and bounded[-1] == many[-1]


def test_digests_of_a_reference() -> None:
    repo_digests = (f"reg.test/team/app@{OTHER_DIGEST}", f"reg.test/team/app@{DIGEST}")
    tag = parse_reference("reg.test/team/app:1")
    assert evidence.digests_of(tag, repo_digests, [_verified(digest=OTHER_DIGEST)]) == [
        OTHER_DIGEST,  # what the tag was last pulled as comes first
        DIGEST,
    ]
    by_digest = parse_reference(f"reg.test/team/app@{DIGEST}")
    assert evidence.digests_of(by_digest, repo_digests, []) == [DIGEST]
    elsewhere = parse_reference(f"reg.test/team/other@{DIGEST}")
    assert evidence.digests_of(elsewhere, repo_digests, []) == []


def test_the_record_keeps_its_verifications_and_reads_old_records() -> None:
    record = ImageRecord(
        id=DIGEST,
        repo_tags=("reg.test/team/app:1",),
        repo_digests=(f"reg.test/team/app@{DIGEST}",),
        manifest_digest=DIGEST,
        layers=(),
        size=1,
        created_ns=1,
        verified=(_verified(),),
    )
    assert ImageRecord.from_json(record.to_json(), "x") == record
    old = json.loads(record.to_json())
    del old["verified"]
    assert ImageRecord.from_json(json.dumps(old).encode(), "x") == replace(record, verified=())


def test_a_verification_keeps_each_signature_once_and_bounded() -> None:
    sigs = [AcceptedSignature("sigstore", f"sha256:{n}", "r/a:1") for n in range(40)]
    made = Verification.of(parse_reference("r/a:1"), DIGEST, [sigs[0], *sigs])
    assert made.signatures == tuple(sigs[: evidence.MAX_SIGNATURES])
    assert made.reference == "docker.io/r/a:1"
