"""ImageTrust.check: every requirement of a scope must hold, any one signature may meet it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.support.signing import (
    AttachedSignatures,
    GpgHome,
    cosign_payload,
    new_sigstore_key,
    public_pem,
    sigstore_sign,
)
from vmcri.errors import SignatureRefused
from vmcri.images.reference import parse_reference
from vmcri.images.registry_client import RegistryClient
from vmcri.images.trust.payload import SIMPLE_SIGNING_TYPE
from vmcri.images.trust.policy import parse_policy
from vmcri.images.trust.registries_d import SignatureStores, StorageConfig
from vmcri.images.trust.sources import lookaside_url
from vmcri.images.trust.verifier import ImageTrust

DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
REF = parse_reference("reg.test/team/app:1")
COSIGN = new_sigstore_key("ed25519")


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GpgHome, str, str]]:
    with GpgHome(tmp_path_factory.mktemp("gnupg")) as home:
        yield home, home.generate("trusted"), home.generate("untrusted")


def _simple_payload(reference: str) -> bytes:
    critical = {
        "type": SIMPLE_SIGNING_TYPE,
        "image": {"docker-manifest-digest": DIGEST},
        "identity": {"docker-reference": reference},
    }
    return json.dumps({"critical": critical, "optional": {}}).encode()


def _trust(home: GpgHome, fpr: str, store: Path) -> ImageTrust:
    gpg_key = base64.b64encode(home.public_key(fpr)).decode()
    pem = base64.b64encode(public_pem(COSIGN)).decode()
    doc = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "reg.test/team": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyData": gpg_key},
                    {"type": "sigstoreSigned", "keyData": pem},
                ]
            }
        },
    }
    policy = parse_policy(json.dumps(doc).encode(), "policy.json", Path("/"))
    return ImageTrust(policy, SignatureStores(StorageConfig(f"file://{store}", True)))


def _store(store: Path, signatures: list[bytes]) -> None:
    for n, sig in enumerate(signatures, 1):
        path = Path(lookaside_url(str(store), REF, DIGEST, n))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sig)


def _cosigned(reference: str = "reg.test/team/app:1") -> AttachedSignatures:
    payload = cosign_payload(reference, DIGEST)
    return AttachedSignatures(DIGEST, [(payload, sigstore_sign(COSIGN, payload))])


def test_every_requirement_must_hold(gpg: tuple[GpgHome, str, str], tmp_path: Path) -> None:
    home, trusted, _ = gpg
    trust = _trust(home, trusted, tmp_path)
    _store(tmp_path, [home.sign(trusted, _simple_payload("reg.test/team/app:1"))])
    trust.check(REF, DIGEST, cast(RegistryClient, _cosigned()))
    with pytest.raises(SignatureRefused) as err:
        trust.check(REF, DIGEST, cast(RegistryClient, AttachedSignatures(DIGEST, [])))
    assert '["reg.test/team"][1], sigstoreSigned' in err.value.message
    assert "no sigstore signature is attached" in err.value.message


def test_any_one_good_signature_meets_a_requirement(
    gpg: tuple[GpgHome, str, str], tmp_path: Path
) -> None:
    home, trusted, untrusted = gpg
    trust = _trust(home, trusted, tmp_path)
    _store(
        tmp_path,
        [
            home.sign(untrusted, _simple_payload("reg.test/team/app:1")),
            home.sign(trusted, _simple_payload("reg.test/team/other:1")),
            home.sign(trusted, _simple_payload("reg.test/team/app:1")),
        ],
    )
    trust.check(REF, DIGEST, cast(RegistryClient, _cosigned()))


def test_each_failed_signature_is_reported(gpg: tuple[GpgHome, str, str], tmp_path: Path) -> None:
    home, trusted, untrusted = gpg
    trust = _trust(home, trusted, tmp_path)
    _store(
        tmp_path,
        [
            home.sign(untrusted, _simple_payload("reg.test/team/app:1")),
            home.sign(trusted, _simple_payload("reg.test/team/other:1")),
            b"not an OpenPGP message",
        ],
    )
    with pytest.raises(SignatureRefused) as err:
        trust.check(REF, DIGEST, cast(RegistryClient, _cosigned()))
    message = err.value.message
    assert message.startswith("SignatureValidationFailed: image reg.test/team/app:1")
    assert '["reg.test/team"][0], signedBy GPGKeys' in message
    assert "which the policy does not trust" in message.split("signature-1: ")[1]
    assert "signature-2: signed for 'reg.test/team/other:1'" in message
    assert "signature-3: not a valid signature" in message


def test_unlisted_scope_falls_to_the_default(gpg: tuple[GpgHome, str, str], tmp_path: Path) -> None:
    home, trusted, _ = gpg
    trust = _trust(home, trusted, tmp_path)
    with pytest.raises(SignatureRefused, match=r"policy.json default\[0\], reject"):
        trust.check(parse_reference("reg.test/elsewhere:1"), DIGEST, None)
