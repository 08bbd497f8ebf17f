"""A hostile writable layer against the disk-usage walk behind ListContainerStats.

The container (or the guest, through its share) owns the tree: it picks how many entries
it holds and how deep it goes, plants symlink loops, and renames directories while the
host walks. Each test builds such a tree and asserts the walk ends in bounded time,
counts nothing outside the tree, and leaks no descriptors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmcri.host.disk import MAX_DEPTH, UsageCache, WalkLimits, tree_usage, walk_usage

FANOUT = 150  # directories the guest's swapped directory holds
DEEP = 1_500  # deeper than Python's recursion limit, and than the walk's depth bound


def _fds_into(tree: Path) -> list[str]:
    """This process's descriptors open on ``tree`` or below. Only those: the test process's
    other descriptors (channels and files of earlier tests, closed as they are collected)
    come and go while a walk runs, and made a count of all of them flaky in CI."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile: not open on the tree
        except OSError as exc:  # e.g. a path too long to read back: deep in a chain
            found.append(f"{fd}: {exc}")
            continue
        if target == str(tree) or target.startswith(f"{tree}/"):
            found.append(f"{fd}: {target[:200]}")
    return found


def _files(where: Path, count: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.close(os.open(where / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))


def test_many_entries_stop_at_the_entry_bound(tmp_path: Path) -> None:
    _files(tmp_path / "top" / "many", 6_000)
    started = time.monotonic()
    # A generous clock: on a loaded machine the 1 s default could end the walk first.
    usage = walk_usage(tmp_path / "top", WalkLimits(max_entries=2_000, time_budget_s=60.0))
    assert time.monotonic() - started < 5.0
    assert usage.inodes == 2_000
    assert not usage.complete and "2000 entries" in usage.bound
    assert _fds_into(tmp_path) == []


def test_a_slow_walk_stops_at_the_time_budget(tmp_path: Path) -> None:
    _files(tmp_path / "top" / "many", 1_000)
    ticks = iter(range(10**9))
    usage = walk_usage(
        tmp_path / "top", WalkLimits(time_budget_s=3.0), clock=lambda: float(next(ticks))
    )
    assert usage.inodes < 1_000  # a second passes at each look at the clock
    assert "over 3s" in usage.bound


def _chain(top: Path, depth: int, *, remove: bool = False) -> None:
    """A chain top/d/d/d/... deeper than any path may be long, built or removed through fds."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            if not remove:
                os.mkdir("d", dir_fd=fds[-1])
            try:
                fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
            if not remove:
                os.close(fds.pop(0))
        while remove and len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def test_a_deep_chain_is_walked_to_the_depth_bound(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    _chain(top, DEEP)
    try:
        started = time.monotonic()
        usage = walk_usage(top)
        assert time.monotonic() - started < 5.0
        assert usage.inodes == MAX_DEPTH + 1  # the levels entered, and the one listed below
        assert "levels deep" in usage.bound
        assert _fds_into(tmp_path) == []
    finally:
        _chain(top, DEEP, remove=True)


def test_symlink_loops_and_links_out_are_one_inode_each(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _files(outside, 50)
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "loop").symlink_to(".")
    (top / "a" / "back").symlink_to("../a")
    (top / "self").symlink_to("self")
    (top / "out").symlink_to(outside)
    (top / "etc").symlink_to("/etc")
    usage = walk_usage(top)
    assert usage.complete
    assert usage.inodes == 6  # a, loop, back, self, out, etc


# The guest, in a process of its own so that it really runs while the host walks: swaps
# a/ for a symlink to the host directory and back, holding each state for about a
# millisecond (the attack's pace), until its stdin closes; then prints how often.
GUEST = """
import os, select, sys
top, outside = sys.argv[1], sys.argv[2]
a, moved = os.path.join(top, "a"), os.path.join(top, "a.moved")
swaps = 0
print("swapping", flush=True)
while not select.select([sys.stdin], [], [], 0.001)[0]:  # each state held ~1 ms
    os.rename(a, moved)
    os.symlink(outside, a)
    select.select([], [], [], 0.001)
    os.unlink(a)
    os.rename(moved, a)
    swaps += 1
print(swaps, flush=True)
"""


def test_a_directory_swapped_for_a_symlink_mid_walk_leads_nowhere_outside(tmp_path: Path) -> None:
    top, outside = tmp_path / "top", tmp_path / "outside"
    for i in range(FANOUT):
        _files(top / "a" / "x" / f"d{i}", 1)
        _files(outside / "x" / f"d{i}", 10)  # what an escape would count, ten per directory
    most_in_tree = 1 + 1 + 1 + FANOUT * 2  # a, its stand-in symlink, x, each d and its file
    guest = subprocess.Popen(
        [sys.executable, "-c", GUEST, str(top), str(outside)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert guest.stdin is not None and guest.stdout is not None
    try:
        assert guest.stdout.readline() == "swapping\n"
        counts = [walk_usage(top).inodes for _ in range(40)]
    finally:
        guest.stdin.close()
        swaps = int(guest.stdout.readline() or 0)
        guest.wait(10)
    assert swaps > 0, "the guest must have swapped during the walks"
    assert max(counts) <= most_in_tree, f"counted outside the tree: {counts}"
    assert walk_usage(top).inodes == 2 + FANOUT * 2


def test_results_are_cached_per_directory_for_a_short_time(tmp_path: Path) -> None:
    now = [0.0]
    cache = UsageCache(ttl_s=5.0, clock=lambda: now[0])
    _files(tmp_path / "one", 3)
    _files(tmp_path / "two", 1)
    assert cache.measure(tmp_path / "one").inodes == 3
    _files(tmp_path / "one", 10)  # seven more
    now[0] = 4.9
    assert cache.measure(tmp_path / "one").inodes == 3  # within the TTL: no walk
    assert cache.measure(tmp_path / "two").inodes == 1  # each directory on its own
    now[0] = 5.1
    assert cache.measure(tmp_path / "one").inodes == 10


def test_a_cut_walk_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    cache = UsageCache(WalkLimits(max_entries=10), ttl_s=1.0, clock=lambda: now[0])
    _files(tmp_path / "top", 50)
    with caplog.at_level("WARNING", logger="vmcri.host.disk"):
        for step in range(3):
            now[0] = step * 2.0
            assert cache.measure(tmp_path / "top").inodes == 10
    warnings = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert len(warnings) == 1
    assert "over 10 entries" in warnings[0].getMessage()


def test_tree_usage_keeps_its_contract(tmp_path: Path) -> None:
    _files(tmp_path / "top", 4)
    size, inodes = tree_usage(tmp_path / "top")
    assert inodes == 4 and size >= 0
    assert tree_usage(tmp_path / "absent") == (0, 0)
