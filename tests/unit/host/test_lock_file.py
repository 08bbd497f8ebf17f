"""Lock files no other user can open (issue 20.8): private file and directory, no symlinks."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import pytest

from vmcri.daemon import StateLock
from vmcri.errors import ConfigError
from vmcri.host.lock_file import open_lock_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_file_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "lock" / "x.lock"
    fd = open_lock_file(path)
    os.close(fd)
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)


def test_a_file_and_directory_left_open_to_others_are_made_private(tmp_path: Path) -> None:
    path = tmp_path / "lock" / "x.lock"
    path.parent.mkdir(mode=0o755)
    path.parent.chmod(0o755)
    path.write_text("123")
    path.chmod(0o644)
    os.close(open_lock_file(path))
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o700)
    os.close(open_lock_file(path, dir_mode=None))  # a directory others must read: kept
    path.parent.chmod(0o755)
    os.close(open_lock_file(path, dir_mode=None))
    assert _mode(path.parent) == 0o755


def test_a_symlinked_file_or_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "x.lock").symlink_to(target)
    with pytest.raises(OSError) as info:
        open_lock_file(tmp_path / "lock" / "x.lock")
    assert info.value.errno == errno.ELOOP
    (tmp_path / "dirlink").symlink_to(tmp_path / "lock")
    with pytest.raises(OSError):
        open_lock_file(tmp_path / "dirlink" / "y.lock")
    assert not (tmp_path / "lock" / "y.lock").exists()
    # A configured directory (dir_mode None) may be a symlink; the file still may not.
    os.close(open_lock_file(tmp_path / "dirlink" / "y.lock", dir_mode=None))
    assert _mode(tmp_path / "lock" / "y.lock") == 0o600


def test_the_state_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire()
    try:
        assert (first.path.read_text(), _mode(first.path)) == (str(os.getpid()), 0o600)
        with pytest.raises(
            ConfigError, match=f"in use by another vmcri daemon \\(pid {os.getpid()}\\)"
        ):
            StateLock(tmp_path).acquire()
    finally:
        first.release()
    second = StateLock(tmp_path)
    second.acquire()
    second.release()
    fd = os.open(first.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free
    finally:
        os.close(fd)
