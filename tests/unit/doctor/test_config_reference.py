"""docs/config-reference.md is generated from the default config text: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from vmcri.config import DEFAULT_CONFIG_TEXT
from vmcri.config_reference import render_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "config-reference.md"


def test_reference_doc_is_the_generated_one() -> None:
    assert DOC.read_text() == render_reference(DEFAULT_CONFIG_TEXT), (
        "docs/config-reference.md is stale: run `vmcri config reference > docs/config-reference.md`"
    )


def test_every_key_of_every_section_is_documented() -> None:
    text = render_reference(DEFAULT_CONFIG_TEXT)
    for key in ("`socket`", "`[metrics]`", "`address`", "`accel`", "`runc`"):
        assert key in text
