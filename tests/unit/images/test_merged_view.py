"""The cached resolver: a change to the tree must never leave a stale answer behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.layers import Layer
from tests.support.unpack import unpack_into
from vmcri.errors import UnsafeContent
from vmcri.images.unpack import UnpackLimits

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts need mknod (root)")


def test_directory_replaced_by_a_symlink_is_followed_afterwards(tmp_path: Path) -> None:
    layer = Layer().file("a/b/one", b"1").dir("t").symlink("a/b", "/t").file("a/b/two", b"2")
    d = unpack_into(tmp_path, layer)
    assert (d / "t/two").read_bytes() == b"2"
    assert os.readlink(d / "a/b") == "/t"


def test_symlink_replaced_by_a_directory_is_not_followed_afterwards(tmp_path: Path) -> None:
    layer = Layer().dir("t").symlink("s", "t").file("s/one", b"1").dir("s").file("s/two", b"2")
    d = unpack_into(tmp_path, layer)
    assert (d / "t/one").read_bytes() == b"1"
    assert (d / "s/two").read_bytes() == b"2"
    assert not (d / "t/two").exists()


def test_lower_directory_shadowed_by_an_upper_symlink(tmp_path: Path) -> None:
    lower = unpack_into(
        tmp_path, Layer().dir("usr").dir("usr/lib").file("usr/lib/x", b"x").dir("opt")
    )
    upper = unpack_into(
        tmp_path,
        Layer().file("usr/lib/first", b"1").symlink("usr/lib", "/opt").file("usr/lib/second", b"2"),
        (lower,),
    )
    assert (upper / "usr/lib").is_symlink()
    assert (upper / "opt/second").read_bytes() == b"2"


@root_only
def test_opaque_marker_hides_lower_symlinks_from_later_entries(tmp_path: Path) -> None:
    lower = unpack_into(tmp_path, Layer().dir("etc").symlink("etc/conf", "/elsewhere"))
    upper = unpack_into(tmp_path, Layer().opaque("etc").file("etc/conf/file", b"f"), (lower,))
    assert (upper / "etc/conf/file").read_bytes() == b"f"
    assert not (upper / "elsewhere").exists()


def test_symlink_walk_is_capped(tmp_path: Path) -> None:
    layer = Layer().dir("x").symlink("s", "x/.." * 300 + "/x").file("s/f", b"")
    with pytest.raises(UnsafeContent, match="more than 100 components"):
        unpack_into(tmp_path, layer, limits=UnpackLimits(max_walk=100))


def test_depth_through_symlinks_is_capped(tmp_path: Path) -> None:
    layer = Layer().dir("a/" * 10).symlink("s", "/" + "a/" * 10).file("s/" + "b/" * 5 + "f", b"")
    with pytest.raises(UnsafeContent, match="more than 12 directories deep"):
        unpack_into(tmp_path, layer, limits=UnpackLimits(max_depth=12))
