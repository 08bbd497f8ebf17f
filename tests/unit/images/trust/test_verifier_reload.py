"""The node's policy and registries.d are re-read when they change; an invalid edit
refuses what it covers, naming the key, until fixed (never "accept", never the old file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vmcri.errors import SignatureRefused
from vmcri.images.reference import parse_reference
from vmcri.images.trust.verifier import ImageTrust, TrustSettings

REF = parse_reference("reg.test/team/app:1")
DIGEST = "sha256:" + "a" * 64


def _settings(tmp_path: Path) -> TrustSettings:
    (tmp_path / "registries.d").mkdir()
    return TrustSettings(tmp_path / "policy.json", tmp_path / "registries.d", tmp_path / "p")


def _write(path: Path, text: str) -> None:
    """Write and move the mtime on, as an edit a second later would (no sleeping)."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _policy(kind: str) -> str:
    return json.dumps({"default": [{"type": kind}]})


def test_a_policy_edit_is_seen_at_the_next_use(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _write(settings.policy, _policy("insecureAcceptAnything"))
    trust = ImageTrust.load(settings)
    assert trust.policy_for("").accepts_everything
    _write(settings.policy, _policy("reject"))
    with pytest.raises(SignatureRefused, match="reject"):
        trust.check(REF, DIGEST, None, trust.policy_for("team"))
    settings.policy.unlink()  # as at start-up: no file, no policy
    assert trust.node_policy().accepts_everything


def test_an_invalid_edit_refuses_naming_the_key_until_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    _write(settings.policy, _policy("insecureAcceptAnything"))
    trust = ImageTrust.load(settings)
    _write(settings.policy, _policy("trustMe"))
    for _ in range(2):  # refused again from the cache, not accepted as before
        with pytest.raises(SignatureRefused) as err:
            trust.policy_for("")
        assert "default[0].type: unknown requirement type 'trustMe'" in err.value.message
        assert str(settings.policy) in err.value.message
    assert "signature policy changed and is invalid" in caplog.text
    with pytest.raises(SignatureRefused):
        trust.policy_for("team")  # a namespace without its own file has the node's
    _write(settings.policy, _policy("insecureAcceptAnything") + " ")
    assert trust.policy_for("").accepts_everything


def test_a_registries_d_edit_is_seen_and_an_invalid_one_refuses_signed_pulls(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    conf = settings.registries_d / "node.yaml"
    _write(conf, "default-docker:\n  lookaside: file:///sigs\n")
    trust = ImageTrust.load(settings)
    assert trust.signature_stores().lookaside(REF) == "file:///sigs"
    _write(conf, "default-docker:\n  lookaside: file:///elsewhere\n")
    assert trust.signature_stores().lookaside(REF) == "file:///elsewhere"
    _write(conf, "default-docker:\n  lookasid: file:///sigs\n")
    with pytest.raises(SignatureRefused, match=r"registries\.d is invalid.*lookasid"):
        trust.signature_stores()
    # A policy that needs no signature does not read the stores: nothing to refuse.
    _write(settings.policy, _policy("insecureAcceptAnything"))
    assert trust.check(REF, DIGEST, None) == ()
    _write(settings.policy, json.dumps({"default": [{"type": "reject"}]}))
    with pytest.raises(SignatureRefused, match="rejects every image"):
        trust.check(REF, DIGEST, None)
    # A new file is seen too.
    conf.unlink()
    _write(settings.registries_d / "other.yaml", "default-docker:\n  lookaside: file:///new\n")
    assert trust.signature_stores().lookaside(REF) == "file:///new"
