"""A layer's erofs image (``images/layer_erofs.py``): built once next to the layer,
atomically, and a failed build leaves nothing under the image's name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vmcri.errors import HostCommandError
from vmcri.images import layer_erofs
from vmcri.images.layer_erofs import erofs_path, layer_image

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.erofs") is None, reason="erofs-utils is not installed"
)


def test_the_image_is_built_once_next_to_the_layer(tmp_path: Path) -> None:
    diff = tmp_path / "layers" / "abc" / "diff"
    (diff / "etc").mkdir(parents=True)
    (diff / "etc" / "hostname").write_text("x\n")
    image = layer_image(diff)
    assert image == erofs_path(diff) == diff.parent / "layer.erofs"
    assert image.read_bytes()[1024:1028] == b"\xe2\xe1\xf5\xe0"  # the erofs magic
    assert image.stat().st_mode & 0o222 == 0
    built = image.stat().st_mtime_ns
    assert layer_image(diff) == image and image.stat().st_mtime_ns == built
    assert sorted(p.name for p in diff.parent.iterdir()) == ["diff", "layer.erofs"]


def test_a_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    diff = tmp_path / "layers" / "abc" / "diff"
    diff.mkdir(parents=True)
    monkeypatch.setattr(layer_erofs, "MKFS", "false")
    with pytest.raises(HostCommandError, match="of layer abc"):
        layer_image(diff)
    assert sorted(p.name for p in diff.parent.iterdir()) == ["diff"]


def test_image_gc_removes_the_erofs_image_with_its_layer(tmp_path: Path) -> None:
    from vmcri.images.layer_store import LayerStore

    store = LayerStore(tmp_path / "images")
    chain = "sha256:" + "ab" * 32
    (store.diff_dir(chain) / "etc").mkdir(parents=True)
    image = layer_image(store.diff_dir(chain))
    assert image.is_file() and store.chain_dirs() == {chain}
    store.remove(chain)
    assert not image.exists() and list(store.root.iterdir()) == []
