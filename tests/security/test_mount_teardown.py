"""Teardown finds and detaches every mount, whatever the names below a pod look like."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmcri.errors import HostCommandError
from vmcri.host import mounts
from vmcri.host.mounts import HostMounter, decode_mountinfo_path, mount_points


def test_mountinfo_paths_decode_only_octal_escapes() -> None:
    # The kernel writes space, tab, newline and backslash as \ooo and every other byte as is.
    raw = b"/pods/a\\040b/tab\\011nl\\012bs\\134/\xc3\xa9t\xc3\xa9/\xff"
    assert decode_mountinfo_path(raw) == b"/pods/a b/tab\tnl\nbs\\/\xc3\xa9t\xc3\xa9/\xff"
    # What unicode_escape used to do to UTF-8 names: mojibake, so the mount was never found.
    assert raw.decode("unicode_escape") != "/pods/a b/tab\tnl\nbs\\/été/\xff"


@pytest.mark.integration
def test_mounts_with_hostile_names_are_all_detached(tmp_path: Path) -> None:
    mounter = HostMounter()
    source = tmp_path / "source"
    source.mkdir()
    names = ["with space", "new\nline", "back\\slash", "été", os.fsdecode(b"\xff\xfe")]
    for name in names:
        mounter.bind(source, tmp_path / "pod" / name)
    # Two mounts stacked on one point: detaching the top one uncovers the other.
    mounter.bind(source, tmp_path / "pod" / "stacked")
    mounter.bind(source, tmp_path / "pod" / "stacked")
    assert len(mount_points(tmp_path / "pod")) == len(names) + 2

    mounter.unmount_below(tmp_path / "pod")

    assert mount_points(tmp_path / "pod") == []


def test_a_mount_that_will_not_go_is_reported_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = tmp_path / "pod" / "volume"
    monkeypatch.setattr(mounts, "mount_points", lambda root: [stuck])
    monkeypatch.setattr(HostMounter, "unmount", lambda self, target: None)  # ENOENT-like
    with pytest.raises(HostCommandError, match=r"still mounted below .*volume"):
        HostMounter().unmount_below(tmp_path / "pod")


@pytest.mark.integration
def test_teardown_never_walks_below_the_outermost_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A guest can swap a directory inside its volume for a symlink between the host's read
    # of mountinfo and its umount: only the outermost mounts (paths the host made) are named.
    mounter = HostMounter()
    volume = tmp_path / "volume"
    (volume / "a" / "sub").mkdir(parents=True)
    mounter.bind(tmp_path / "volume", volume)  # a mount point of its own, as kubelet's are
    mounter.bind(tmp_path / "volume", volume / "a" / "sub")
    mounter.bind(volume, tmp_path / "pod" / "volumes" / "0")  # carries a copy of a/sub
    named: list[Path] = []
    real = HostMounter.unmount

    def unmount(self: HostMounter, target: Path) -> None:
        named.append(target)
        real(self, target)

    monkeypatch.setattr(HostMounter, "unmount", unmount)
    mounter.unmount_below(tmp_path / "pod")
    assert named == [tmp_path / "pod" / "volumes" / "0"]
    assert mount_points(tmp_path / "pod") == []
    mounter.unmount_below(tmp_path)
