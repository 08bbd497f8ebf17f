"""Safe unpack: malicious entries fail the layer and nothing lands outside it."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tests.support.layers import Layer
from tests.support.unpack import unpack_into
from vmcri.errors import DigestMismatch, UnsafeContent
from vmcri.images.layer_store import LayerStore, chain_ids
from vmcri.images.unpack import UnpackLimits, unpack_layer

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="whiteouts need mknod and trusted.* xattrs (root)"
)


def _outside_untouched(tmp: Path) -> None:
    assert not (tmp / "outside").exists()
    assert not Path("/tmp/vmcri-escape-test").exists()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_files_links_modes(tmp_path: Path, compression: str) -> None:
    layer = (
        Layer(compression)
        .dir("bin")
        .file("bin/tool", b"x" * 100_000, 0o4755)
        .symlink("bin/alias", "tool")
        .hardlink("bin/hl", "bin/tool")
        .file("a/b/c/deep", b"d")
    )
    d = unpack_into(tmp_path, layer)
    assert (d / "bin/tool").read_bytes() == b"x" * 100_000
    assert stat.S_IMODE((d / "bin/tool").stat().st_mode) == 0o4755
    assert os.readlink(d / "bin/alias") == "tool"
    assert (d / "bin/hl").stat().st_ino == (d / "bin/tool").stat().st_ino
    assert (d / "a/b/c/deep").read_bytes() == b"d"


def test_diff_id_mismatch(tmp_path: Path) -> None:
    blob, _, _ = Layer().file("f", b"1").blob()
    with pytest.raises(DigestMismatch):
        unpack_layer(io.BytesIO(blob), tmp_path, (), "sha256:" + "0" * 64)


@pytest.mark.parametrize("name", ["../outside", "a/../../outside", "./../outside"])
def test_path_traversal_refused(tmp_path: Path, name: str) -> None:
    layer = Layer().file(name, b"pwned")
    with pytest.raises(UnsafeContent, match="escapes"):
        unpack_into(tmp_path, layer)
    _outside_untouched(tmp_path)


def test_absolute_name_stays_inside(tmp_path: Path) -> None:
    d = unpack_into(tmp_path, Layer().file("/tmp/vmcri-escape-test", b"x"))
    assert (d / "tmp/vmcri-escape-test").read_bytes() == b"x"
    _outside_untouched(tmp_path)


def test_symlink_escape_is_resolved_inside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    layer = (
        Layer()
        .symlink("evil", str(outside))
        .file("evil/pwned", b"x")
        .symlink("rel", "../../../../..")
        .file("rel/tmp/vmcri-escape-test", b"y")
    )
    d = unpack_into(tmp_path, layer)
    _outside_untouched(tmp_path)
    inner = d / str(outside).lstrip("/") / "pwned"
    assert inner.read_bytes() == b"x"
    assert (d / "tmp/vmcri-escape-test").read_bytes() == b"y"


def test_symlink_in_lower_layer_is_followed_inside(tmp_path: Path) -> None:
    lower = unpack_into(tmp_path, Layer().dir("usr").dir("usr/lib").symlink("lib", "/usr/lib"))
    upper = unpack_into(tmp_path, Layer().file("lib/libx.so", b"so"), (lower,))
    assert (upper / "usr/lib/libx.so").read_bytes() == b"so"
    assert not (upper / "lib").exists()


def test_hardlink_escape_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"host secret")
    for target in ("../secret", "../../../../etc/passwd"):
        with pytest.raises(UnsafeContent):
            unpack_into(tmp_path, Layer().hardlink("stolen", target))
    # Through a symlink: resolved inside the root, where there is no such file.
    layer = Layer().symlink("up", str(tmp_path)).hardlink("stolen", "up/secret")
    with pytest.raises(UnsafeContent, match="not a file of this image"):
        unpack_into(tmp_path, layer)
    assert (tmp_path / "secret").stat().st_nlink == 1


def test_hardlink_to_lower_layer_file_is_copied_up(tmp_path: Path) -> None:
    lower = unpack_into(tmp_path, Layer().file("etc/conf", b"c"))
    upper = unpack_into(tmp_path, Layer().hardlink("etc/conf2", "etc/conf"), (lower,))
    assert (upper / "etc/conf2").read_bytes() == b"c"
    assert (lower / "etc/conf").stat().st_nlink == 1


def test_device_node_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeContent, match="device"):
        unpack_into(tmp_path, Layer().device("dev/sda", 8, 0))


def test_entry_and_path_limits(tmp_path: Path) -> None:
    layer = Layer()
    for i in range(20):
        layer.file(f"f{i}", b"")
    with pytest.raises(UnsafeContent, match="entries"):
        unpack_into(tmp_path, layer, limits=UnpackLimits(max_entries=10))
    with pytest.raises(UnsafeContent, match="longer"):
        unpack_into(tmp_path, Layer().file("a/" * 100 + "f", b""), limits=UnpackLimits(max_path=64))


def test_trusted_xattrs_dropped_user_kept(tmp_path: Path) -> None:
    layer = Layer().file("f", b"", xattrs={"trusted.overlay.redirect": "/etc", "user.note": "hi"})
    d = unpack_into(tmp_path, layer)
    names = os.listxattr(d / "f")
    assert "trusted.overlay.redirect" not in names
    if "user.note" in names:  # tmpfs without user xattrs drops it; never the trusted one
        assert os.getxattr(d / "f", "user.note") == b"hi"


@root_only
def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    lower = unpack_into(
        tmp_path, Layer().file("etc/a", b"a").file("etc/b", b"b").file("var/x", b"")
    )
    upper = unpack_into(
        tmp_path, Layer().whiteout("etc/a").opaque("var").file("var/y", b""), (lower,)
    )
    st = os.lstat(upper / "etc/a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (upper / "etc/.wh.a").exists()
    assert os.getxattr(upper / "var", "trusted.overlay.opaque") == b"y"
    assert not (upper / "var/.wh..wh..opq").exists()


@root_only
def test_ownership_kept(tmp_path: Path) -> None:
    d = unpack_into(tmp_path, Layer().file("f", b"", 0o2755, uid=1000, gid=1001))
    st = (d / "f").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o2755)


def test_layer_store_failure_leaves_nothing(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    blob, _, diff_id = Layer().file("ok", b"1").file("../bad", b"2").blob()
    (tmp_path / "blob").write_bytes(blob)
    with pytest.raises(UnsafeContent):
        store.unpack(diff_id, "", diff_id, tmp_path / "blob")
    assert list(store.root.iterdir()) == []


def test_chain_ids_follow_the_spec() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    import hashlib

    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(UnsafeContent):
        unpack_layer(io.BytesIO(b"\x1f\x8b garbage"), tmp_path, (), "sha256:" + "0" * 64)


def test_gnu_longname_and_pax(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("long/" + "n" * 200)
        info.size = 1
        t.addfile(info, io.BytesIO(b"z"))
    raw = buf.getvalue()
    import hashlib

    d = tmp_path / "d"
    d.mkdir()
    unpack_layer(io.BytesIO(raw), d, (), "sha256:" + hashlib.sha256(raw).hexdigest())
    assert (d / "long" / ("n" * 200)).read_bytes() == b"z"
