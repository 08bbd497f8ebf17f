from __future__ import annotations

import os
from pathlib import Path

from vmcri.host.disk import tree_usage


def test_counts_blocks_and_inodes_once_per_hard_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    os.link(tmp_path / "d" / "f", tmp_path / "g")
    (tmp_path / "s").symlink_to("d/f")
    size, inodes = tree_usage(tmp_path)
    assert inodes == 3  # d, f (and its link g), s
    assert size >= 10000


def test_missing_tree_is_empty(tmp_path: Path) -> None:
    assert tree_usage(tmp_path / "absent") == (0, 0)
