"""The forward-only tar input: tarfile's headers, our copy of file data, same results."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.layers import Layer
from vmcri.errors import UnsafeContent
from vmcri.images.unpack import unpack_layer


def _diff_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _unpack_raw(tmp: Path, raw: bytes) -> Path:
    dest = tmp / "dest"
    dest.mkdir()
    unpack_layer(io.BytesIO(raw), dest, (), _diff_id(raw))
    return dest


def test_many_sizes_around_block_and_buffer_edges(tmp_path: Path) -> None:
    sizes = [0, 1, 511, 512, 513, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]
    layer = Layer("gzip")
    for size in sizes:
        layer.file(f"f{size}", hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))
    layer.hardlink("hl", "f513").symlink("sl", "f1")
    blob, _, diff_id = layer.blob()
    dest = tmp_path / "d"
    dest.mkdir()
    unpack_layer(io.BytesIO(blob), dest, (), diff_id)
    for size in sizes:
        want = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
        assert (dest / f"f{size}").read_bytes() == want
    assert (dest / "hl").stat().st_ino == (dest / "f513").stat().st_ino


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_files_keep_their_holes_and_data(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(b"middle" * 1000)
        f.seek((4 << 20) - 6)
        f.write(b"theend")
    (src / "after").write_bytes(b"next entry")
    raw = subprocess.run(
        ["tar", f"--format={fmt}", "--sparse", "-cf", "-", "-C", str(src), "sparse", "after"],
        check=True,
        capture_output=True,
    ).stdout
    dest = _unpack_raw(tmp_path, raw)
    assert (dest / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert (dest / "after").read_bytes() == b"next entry"


def test_stream_ending_inside_a_file_is_refused(tmp_path: Path) -> None:
    raw = Layer("none").file("big", os.urandom(200_000)).tar_bytes()
    cut = raw[:100_000]
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(UnsafeContent, match="broken tar"):
        unpack_layer(io.BytesIO(cut), dest, (), _diff_id(cut))


def test_oversized_pax_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 1 << 30
    raw = pax.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 4096
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(UnsafeContent):
        unpack_layer(io.BytesIO(raw), dest, (), _diff_id(raw))
