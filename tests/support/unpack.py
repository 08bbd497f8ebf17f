"""A layer unpacked into a fresh directory of the test's."""

from __future__ import annotations

import io
from pathlib import Path

from tests.support.layers import Layer
from vmcri.images.unpack import unpack_layer


def unpack_into(tmp: Path, layer: Layer, lowers: tuple[Path, ...] = (), **kw: object) -> Path:
    blob, _, diff_id = layer.blob()
    dest = tmp / f"d{len(list(tmp.iterdir()))}"
    dest.mkdir()
    unpack_layer(io.BytesIO(blob), dest, lowers, diff_id, **kw)  # type: ignore[arg-type]
    return dest
