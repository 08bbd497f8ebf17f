"""Where the runc handler keeps a pod's and a container's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.errors import InvalidArgument
from vmcri.handlers.runc.layout import Layout, check_id


def test_ids_cannot_escape_the_state_dir(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "s", tmp_path / "r")
    assert layout.container_dir("abc").parent == tmp_path / "s" / "containers"
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(InvalidArgument):
            check_id(bad, "container id")
