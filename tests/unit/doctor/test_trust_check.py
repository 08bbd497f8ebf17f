"""``vmcri doctor`` reports the image signature policy in force."""

from __future__ import annotations

import json
from pathlib import Path

from vmcri.config import ImageTrustConfig
from vmcri.doctor.model import Status
from vmcri.doctor.trust_checks import check_image_trust


def _conf(tmp_path: Path) -> ImageTrustConfig:
    return ImageTrustConfig(
        policy=str(tmp_path / "policy.json"),
        registries_d=str(tmp_path / "registries.d"),
        signature_policy_dir=str(tmp_path / "policies"),
    )


def test_no_policy_accepts_everything(tmp_path: Path) -> None:
    check = check_image_trust(_conf(tmp_path))
    assert check.status is Status.INFO
    assert "no policy file" in check.found and "without signature checks" in check.consequence


def test_policy_in_force_and_namespaces_are_reported(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text(json.dumps({"default": [{"type": "reject"}]}))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "team-a.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    check = check_image_trust(_conf(tmp_path))
    assert check.status is Status.OK
    assert f"{tmp_path}/policy.json: default reject" in check.found
    assert "team-a" in check.found


def test_invalid_policy_fails_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text(json.dumps({"default": [{"type": "trustMe"}]}))
    check = check_image_trust(_conf(tmp_path))
    assert check.status is Status.FAIL
    assert "default[0].type" in check.found and "trustMe" in check.found
    assert "refuses the pulls and containers it covers" in check.consequence


def test_invalid_registries_d_fails_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "a.yaml").write_text("default-docker:\n  lookasid: x\n")
    check = check_image_trust(_conf(tmp_path))
    assert check.status is Status.FAIL
    assert "a.yaml" in check.found and "lookasid" in check.found
