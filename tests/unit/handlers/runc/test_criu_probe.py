"""The runc handler's CRIU probe: its refusal says why, in CRIU's own words."""

from __future__ import annotations

from pathlib import Path

from vmcri.handlers.runc.checkpoint import criu_refusal


def _criu(tmp_path: Path, script: str) -> str:
    path = tmp_path / "criu"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_a_criu_that_fails_its_check_is_quoted(tmp_path: Path) -> None:
    criu = _criu(tmp_path, "echo 'Error (criu/vdso.c:381): vdso: Unexpected rt vDSO' >&2; exit 1")
    refusal = criu_refusal(criu)
    assert refusal.code == "UNIMPLEMENTED"
    assert "does not work on this kernel" in refusal.reason
    assert "Unexpected rt vDSO" in refusal.reason


def test_no_criu_is_said_so(tmp_path: Path) -> None:
    refusal = criu_refusal(str(tmp_path / "absent"))
    assert refusal.code == "UNIMPLEMENTED" and "criu check" in refusal.reason


def test_a_working_criu_still_refuses_naming_what_is_missing(tmp_path: Path) -> None:
    refusal = criu_refusal(_criu(tmp_path, "echo 'Looks good.'"))
    assert "CRIU works here" in refusal.reason
