"""containers-policy.json(5) and registries.d(5) parsing: strict, naming the key at fault."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.signing import GpgHome, new_sigstore_key, public_pem
from vmcri.errors import ConfigError, SignatureRefused
from vmcri.images.reference import parse_reference
from vmcri.images.trust.payload import SIMPLE_SIGNING_TYPE, check_payload
from vmcri.images.trust.policy import (
    AcceptAnything,
    Reject,
    SignedBy,
    SigstoreSigned,
    load_policy,
    parse_policy,
)
from vmcri.images.trust.registries_d import load_registries_d

D = "sha256:" + "c" * 64


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    with GpgHome(tmp_path_factory.mktemp("gnupg")) as home:
        fpr = home.generate("unit")
        yield fpr, home.public_key(fpr)


def _parse(doc: Any, base: Path = Path("/nonexistent")) -> Any:
    return parse_policy(json.dumps(doc).encode(), "policy.json", base)


def _refused(doc: Any, *words: str, base: Path = Path("/nonexistent")) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(doc, base)
    for word in words:
        assert word in err.value.message, err.value.message


ACCEPT = [{"type": "insecureAcceptAnything"}]


def test_debian_default_policy_accepts_everything() -> None:
    policy = _parse({"default": ACCEPT, "transports": {"docker-daemon": {"": ACCEPT}}})
    assert policy.accepts_everything
    assert policy.lookup(parse_reference("busybox")) == ("default", (AcceptAnything(),))


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({}, ["default: missing"]),
        ({"default": []}, ["default", "non-empty list"]),
        ({"default": ACCEPT, "extra": 1}, ["extra: unknown key"]),
        ({"default": [{"type": "insecureAcceptAnything", "x": 1}]}, ["default[0].x"]),
        ({"default": [{"type": "trustMe"}]}, ["default[0].type", "trustMe"]),
        ({"default": ACCEPT, "transports": {"ftp": {}}}, ["transports.ftp", "unknown transport"]),
        (
            {"default": ACCEPT, "transports": {"docker": {"docker.io/busybox": ACCEPT}}},
            ['transports.docker["docker.io/busybox"]', "docker.io/library/busybox"],
        ),
        (
            {"default": ACCEPT, "transports": {"docker": {"*.example:5000": ACCEPT}}},
            ["wildcard"],
        ),
        (
            {"default": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/k"}]},
            ["default[0].keyType", "X509Certificates"],
        ),
        (
            {"default": [{"type": "signedBy", "keyType": "GPGKeys"}]},
            ["default[0]", "exactly one of keyPath"],
        ),
        (
            {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/no/such"}]},
            ["default[0].keyPath", "/no/such"],
        ),
        (
            {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "%%%"}]},
            ["default[0].keyData", "base64"],
        ),
        (
            {"default": [{"type": "sigstoreSigned", "fulcio": {}, "rekorPublicKeyPath": "/r"}]},
            ["default[0].fulcio", "keyless"],
        ),
        (
            {
                "default": [
                    {"type": "sigstoreSigned", "keyData": base64.b64encode(b"junk").decode()}
                ]
            },
            ["default[0].keyData", "PEM"],
        ),
        ({"default": [{"type": "signedBaseLayer"}]}, ["signedBaseLayer"]),
    ],
)
def test_malformed_policy_is_a_start_up_error_naming_the_key(doc: Any, words: list[str]) -> None:
    _refused(doc, *words)


def test_duplicate_keys_and_bad_json_are_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_policy(b'{"default": [], "default": []}', "p.json", Path("/"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_policy(b"{", "p.json", Path("/"))
    with pytest.raises(ConfigError, match="larger than"):
        parse_policy(b" " * (2 << 20), "p.json", Path("/"))


def test_signed_identity_is_checked(gpg_key: tuple[str, bytes]) -> None:
    data = base64.b64encode(gpg_key[1]).decode()

    def req(identity: Any) -> Any:
        return {
            "default": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyData": data,
                 "signedIdentity": identity}
            ]
        }  # fmt: skip

    _refused(req({"type": "matchSomething"}), "signedIdentity.type")
    _refused(req({"type": "matchExact", "dockerReference": "a/b:1"}), "dockerReference")
    _refused(req({"type": "exactReference", "dockerReference": "reg.io/app"}), "tag or digest")
    _refused(req({"type": "exactRepository", "dockerRepository": "reg.io/app:1"}), "no tag")
    _refused(req({"type": "remapIdentity", "prefix": "*.io", "signedPrefix": "r.io"}), "prefix")
    _refused(req({"type": "remapIdentity", "prefix": "r.io/a:1", "signedPrefix": "s.io"}), "tag")
    ok = _parse(req({"type": "remapIdentity", "prefix": "m.io/ns", "signedPrefix": "r.io/t"}))
    assert ok.default[0].identity.kind == "remapIdentity"


def test_scopes_pick_the_most_specific(gpg_key: tuple[str, bytes], tmp_path: Path) -> None:
    fpr, armored = gpg_key
    (tmp_path / "release.asc").write_bytes(armored)
    signed = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "release.asc"}]
    policy = _parse(
        {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    "reg.example.com:5000/team": signed,
                    "reg.example.com:5000/team/open": ACCEPT,
                    "*.example.com": [{"type": "reject"}],
                    "": ACCEPT,
                }
            },
        },
        base=tmp_path,  # a relative keyPath is relative to the policy's directory
    )
    scope, reqs = policy.lookup(parse_reference("reg.example.com:5000/team/app:1"))
    assert scope == 'transports.docker["reg.example.com:5000/team"]'
    assert isinstance(reqs[0], SignedBy) and reqs[0].keyring.fingerprints == (fpr,)
    assert str(tmp_path / "release.asc") in reqs[0].describe()
    scope, reqs = policy.lookup(parse_reference("reg.example.com:5000/team/open:1"))
    assert reqs == (AcceptAnything(),)
    scope, reqs = policy.lookup(parse_reference("other.example.com/x:1"))
    assert scope == 'transports.docker["*.example.com"]' and reqs == (Reject(),)
    scope, reqs = policy.lookup(parse_reference("quay.io/x:1"))
    assert scope == 'transports.docker[""]' and reqs == (AcceptAnything(),)
    assert not policy.accepts_everything


def test_sigstore_keys_load(tmp_path: Path) -> None:
    pems = [public_pem(new_sigstore_key(k)) for k in ("p256", "p384", "ed25519")]
    (tmp_path / "k.pub").write_bytes(pems[0])
    policy = _parse(
        {
            "default": [
                {"type": "sigstoreSigned", "keyPath": str(tmp_path / "k.pub")},
                {
                    "type": "sigstoreSigned",
                    "keyDatas": [base64.b64encode(p).decode() for p in pems],
                },
            ]
        }
    )
    first, second = policy.default
    assert isinstance(first, SigstoreSigned) and len(first.keys) == 1
    assert isinstance(second, SigstoreSigned) and len(second.keys) == 3


def _payload(**critical: Any) -> bytes:
    doc = {
        "type": SIMPLE_SIGNING_TYPE,
        "image": {"docker-manifest-digest": D},
        "identity": {"docker-reference": "reg.io/app:1"},
    }
    doc.update(critical)
    return json.dumps({"critical": doc, "optional": {"creator": "test"}}).encode()


def test_payload_is_read_strictly() -> None:
    assert check_payload(_payload(), SIMPLE_SIGNING_TYPE, D) == "reg.io/app:1"
    bad = [
        (_payload(type="cosign container image signature"), "type"),
        (_payload(image={"docker-manifest-digest": "sha256:" + "d" * 64}), "not sha256:c"),
        (_payload(image={"docker-manifest-digest": D, "x": 1}), "critical.image"),
        (_payload(extra=True), "'critical'"),
        (_payload(identity={"docker-reference": 5}), "not a string"),
        (b"[]", "critical"),
        (b"\xff", "not JSON"),
    ]
    for raw, word in bad:
        with pytest.raises(SignatureRefused) as err:
            check_payload(raw, SIMPLE_SIGNING_TYPE, D)
        assert word in err.value.message


def test_registries_d(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "default-docker:\n  lookaside: https://sigs.example/store\n"
        "docker:\n  reg.io/team:\n    lookaside: file:///var/sigs\n"
        "  reg.io/team/cosign:\n    use-sigstore-attachments: true\n"
    )
    (tmp_path / "b.yaml").write_text("docker:\n  other.io:\n    sigstore: http://127.0.0.1:1/s\n")
    (tmp_path / "ignored.txt").write_text("not yaml: [")
    stores = load_registries_d(tmp_path)
    team = parse_reference("reg.io/team/cosign:1")
    assert stores.lookaside(team) == "file:///var/sigs"  # inherited from the namespace
    assert stores.use_sigstore_attachments(team)
    assert not stores.use_sigstore_attachments(parse_reference("reg.io/team/app:1"))
    assert stores.lookaside(parse_reference("other.io/x:1")) == "http://127.0.0.1:1/s"
    assert stores.lookaside(parse_reference("quay.io/x:1")) == "https://sigs.example/store"
    assert load_registries_d(tmp_path / "absent").lookaside(team) is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("docker:\n  reg.io:\n    lookside: file:///x\n", "lookside: unknown key"),
        ("docker:\n  reg.io:\n    lookaside: ftp://x/y\n", "not a file, http or https"),
        ("docker:\n  reg.io:\n    lookaside: file://rel/x\n", "file:///absolute"),
        ("docker:\n  reg.io:\n    use-sigstore-attachments: yes please\n", "true or false"),
        ("docker:\n  docker.io/busybox:\n    lookaside: file:///x\n", "written in full"),
        ("mirrors: {}\n", "mirrors: unknown key"),
        ("docker: [\n", "not valid YAML"),
    ],
)
def test_registries_d_errors_name_the_file_and_key(tmp_path: Path, text: str, word: str) -> None:
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_registries_d(tmp_path)
    assert word in err.value.message and "x.yaml" in err.value.message


def test_registries_d_scope_in_two_files_is_refused(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text("docker:\n  reg.io:\n    lookaside: file:///x\n")
    with pytest.raises(ConfigError, match="also configured in"):
        load_registries_d(tmp_path)
