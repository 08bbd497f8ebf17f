from __future__ import annotations

import os
from pathlib import Path

from vmcri.host.disk import UsageCache, WalkLimits, open_subdir, tree_usage, walk_usage


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


def _key(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def test_open_subdir_refuses_what_is_no_longer_the_listed_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "other").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("d")
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_subdir(parent, "d", _key(tmp_path / "d"))
        assert fd is not None
        os.close(fd)
        assert open_subdir(parent, "link", _key(tmp_path / "d")) is None  # a symlink now
        assert open_subdir(parent, "fifo", _key(tmp_path / "fifo")) is None  # never opened
        assert open_subdir(parent, "other", _key(tmp_path / "d")) is None  # renamed in
        assert open_subdir(parent, "gone", _key(tmp_path / "d")) is None
    finally:
        os.close(parent)


def test_a_file_top_is_reported_not_walked(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    usage = walk_usage(tmp_path / "f")
    assert (usage.bytes, usage.inodes) == (0, 0)
    assert "cannot open it" in usage.bound


def test_a_slow_walk_is_cached_longer(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5  # every look at the clock costs half a second
        return now[0]

    cache = UsageCache(WalkLimits(time_budget_s=100.0), ttl_s=1.0, clock=clock)
    assert cache.measure(tmp_path).inodes == 1  # a walk of 1 s: cached for 10 s
    (tmp_path / "g").write_bytes(b"y")
    now[0] += 5.0  # past the TTL, within ten times the walk's duration
    assert cache.measure(tmp_path).inodes == 1
    now[0] += 100.0
    assert cache.measure(tmp_path).inodes == 2


def test_cache_forgets_the_least_recently_used_directory(tmp_path: Path) -> None:
    cache = UsageCache(clock=lambda: 0.0, max_cached=2)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    cache.measure(tmp_path / "a")
    cache.measure(tmp_path / "b")
    cache.measure(tmp_path / "a")
    cache.measure(tmp_path / "c")  # b goes
    (tmp_path / "a" / "f").write_bytes(b"")
    (tmp_path / "b" / "f").write_bytes(b"")
    assert cache.measure(tmp_path / "a").inodes == 0  # still cached
    assert cache.measure(tmp_path / "b").inodes == 1  # walked again
