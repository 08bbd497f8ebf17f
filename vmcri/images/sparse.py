"""Sparse files: data written where it belongs, holes left as holes.

tarfile's own reader for sparse members hands out the holes as zeros, so a
205-byte layer could make the daemon write 64 MiB. Here each data segment is
written at its offset and the file is extended with ``ftruncate``; the same
goes for copying a sparse file up from a lower layer (``SEEK_DATA``/``SEEK_HOLE``).
The map comes from the archive, so it is checked first: segments in order,
inside the file, and no more data than the member carries.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Sequence

from vmcri.errors import UnsafeContent
from vmcri.images.tar_stream import TarStream

_COPY_CHUNK = 1 << 20


def check_map(
    m: tarfile.TarInfo,
    segments: Sequence[tuple[int, int]],
    stored: int,
    max_segments: int,
    max_size: int,
    label: str,
) -> int:
    """The bytes of data the map names; ``stored`` is what the member holds.

    Raises UnsafeContent naming the entry for a map that is too long, out of
    order, past the end of the file, or asks for more data than is stored.
    """
    what = f"layer {label} entry {m.name!r}: sparse map"
    if len(segments) > max_segments:
        raise UnsafeContent(f"{what} has more than {max_segments} segments")
    if not 0 <= m.size <= max_size:
        raise UnsafeContent(f"{what}: a file of {m.size} bytes is over {max_size}")
    end = data = 0
    for offset, length in segments:
        if length == 0 and 0 <= offset <= m.size:
            continue  # GNU tar marks the end of the file with one
        if offset < end or length < 0 or offset + length > m.size:
            raise UnsafeContent(
                f"{what}: segment ({offset}, {length}) is out of order "
                f"or outside the {m.size}-byte file"
            )
        end = offset + length
        data += length
    if data > stored:
        raise UnsafeContent(f"{what} names {data} bytes of data, the entry holds {stored}")
    return data


def write_segments(
    fd: int, stream: TarStream, segments: Sequence[tuple[int, int]], size: int
) -> None:
    """Write the member's data (``stream`` is at its start) at the mapped offsets."""
    for offset, length in segments:
        if length:
            os.lseek(fd, offset, os.SEEK_SET)
            stream.copy_to(fd, length)
    os.ftruncate(fd, size)


def copy_keeping_holes(src: int, dst: int, size: int, charge: Callable[[int], None]) -> None:
    """Copy file ``src`` to ``dst`` data extent by data extent; ``charge`` is told
    how many bytes each extent writes before it is written."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(src, start, os.SEEK_HOLE)
        charge(end - start)
        pos = start
        while pos < end:
            chunk = os.pread(src, min(_COPY_CHUNK, end - pos), pos)
            if not chunk:
                break
            view = memoryview(chunk)
            off = pos
            while view:
                n = os.pwrite(dst, view, off)
                view, off = view[n:], off + n
            pos += len(chunk)
        pos = max(pos, end)
    os.ftruncate(dst, size)
