"""The decompressed layer as :mod:`tarfile` reads it: forward only, file data uncopied.

``tarfile``'s own stream mode (``r|``) moves every byte of file data through
its buffers: joined, sliced, copied into a ``BufferedReader``, copied out again
(about a fifth of the unpack's CPU on a 200 MB image). Here tarfile is opened
in its plain mode (``r:``) on :class:`TarStream`, which looks seekable but only
moves forward, so tarfile still parses every header (pax, GNU long names,
sparse maps) while the unpacker copies a regular file's data with
:meth:`TarStream.copy_to`, straight from the decompressor's output to the file.

A backward seek, which tarfile never needs for a forward walk, is refused.
tarfile trusts the archive's header sizes, so the stream bounds what it hands
out before tarfile parses it (all of this runs before the blob's digest is
checked): one extended header (pax, GNU long name or link) is at most
:data:`MAX_HEADER` bytes, and all the header bytes of one entry, sparse maps
included, at most :data:`MAX_ENTRY_HEADERS`. CPython 3.11.7's pax parser is
quadratic in runs of digits (CVE-2024-6232: 64 KiB of them cost 9 s of CPU),
so :class:`CheckedTarInfo` checks a pax header's records in linear time, and
refuses long digit runs, before tarfile parses it. :func:`iter_members` walks the
archive without tarfile's ``members`` list, which would keep every entry.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator, Mapping

from vmcri.errors import UnsafeContent
from vmcri.images.decompress import READ_SIZE, LayerReader

MAX_HEADER = 64 << 10  # one pax header or GNU long name; real ones are tiny
MAX_ENTRY_HEADERS = 256 << 10  # every header block of one entry, its sparse map too
MAX_DIGIT_RUN = 32  # in a pax header; numbers in real ones have at most 20 digits
_DIGITS = re.compile(rb"\d+")


class TarStream:
    """A forward-only, buffered view of a :class:`LayerReader` for tarfile."""

    def __init__(self, reader: LayerReader, label: str = "") -> None:
        self._reader = reader
        self._label = label
        self._entry_headers = 0  # bytes read through read() since begin_entry()
        self._buf = b""
        self._off = 0  # first unread byte of _buf
        self._pos = 0  # stream offset of _buf[_off]

    # -- the file-object surface tarfile uses -----------------------------------

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True  # forward only; see seek

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """Skip forward to ``pos``. Raises tarfile.ReadError for a backward seek
        or one past the end."""
        if whence != os.SEEK_SET or pos < self._pos:
            raise tarfile.ReadError(f"layer: tar stream cannot seek back to {pos}")
        left = pos - self._pos
        buffered = min(left, len(self._buf) - self._off)
        self._off += buffered
        self._pos += buffered
        left -= buffered
        while left:
            chunk = self._reader.read(min(left, READ_SIZE))
            if not chunk:
                raise tarfile.ReadError("layer: unexpected end of the tar stream")
            left -= len(chunk)
            self._pos += len(chunk)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer only at the end). Raises UnsafeContent for an
        unbounded or oversized read (tarfile asks one header at a time)."""
        if n is None or n < 0 or n > MAX_HEADER:
            raise UnsafeContent(
                f"layer {self._label}: a tar extended header of {n} bytes "
                f"(pax, GNU long name or link), over {MAX_HEADER}"
            )
        self._entry_headers += n
        if self._entry_headers > MAX_ENTRY_HEADERS:
            raise UnsafeContent(
                f"layer {self._label}: the extended headers and sparse map "
                f"of one entry are over {MAX_ENTRY_HEADERS} bytes"
            )
        avail = len(self._buf) - self._off
        if avail < n:
            parts = [self._buf[self._off :]]
            while avail < n:
                chunk = self._reader.read(READ_SIZE)
                if not chunk:
                    break
                parts.append(chunk)
                avail += len(chunk)
            self._buf, self._off = b"".join(parts), 0
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        self._pos += len(out)
        return out

    @property
    def label(self) -> str:
        return self._label

    def unread(self, n: int) -> None:
        """Step back over the ``n`` bytes just returned by :meth:`read` (still buffered)."""
        if n > self._off:
            raise tarfile.ReadError("layer: tar stream cannot step back that far")
        self._off -= n
        self._pos -= n
        self._entry_headers -= n

    def begin_entry(self) -> None:
        """The next read starts a new entry's headers: a fresh header allowance."""
        self._entry_headers = 0

    # -- the fast path ----------------------------------------------------------

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to ``fd``. Raises tarfile.ReadError when the
        stream ends first, OSError."""
        left = size
        if self._off < len(self._buf) and left:
            view = memoryview(self._buf)[self._off : self._off + left]
            _write_all(fd, view)
            self._off += len(view)
            self._pos += len(view)
            left -= len(view)
        while left:
            chunk = self._reader.read(min(left, READ_SIZE))
            if not chunk:
                raise tarfile.ReadError("layer: unexpected end of the tar stream")
            _write_all(fd, chunk)
            left -= len(chunk)
            self._pos += len(chunk)


class CheckedTarInfo(tarfile.TarInfo):
    """A TarInfo whose pax headers are checked before tarfile's own parser sees them."""

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        stream = tarfile.fileobj
        assert isinstance(stream, TarStream)
        buf = stream.read(self._block(self.size))  # type: ignore[attr-defined]
        stream.unread(len(buf))
        check_pax_records(buf[: self.size], stream.label)
        return super()._proc_pax(tarfile)  # type: ignore[misc,no-any-return]


def check_pax_records(data: bytes, label: str) -> None:
    """Raise UnsafeContent unless ``data`` is well-formed ``"<len> <key>=<value>\\n"``
    records with no run of more than MAX_DIGIT_RUN digits."""
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.find(b" ", pos, pos + 21)
        if space <= pos or not data[pos:space].isdigit():
            raise UnsafeContent(f"layer {label}: malformed pax extended header record at {pos}")
        end = pos + int(data[pos:space])
        # end > space + 1 > pos: every record moves pos forward, so the loop ends.
        if (
            end <= space + 1
            or end > len(data)
            or data[end - 1] != 0x0A
            or data.find(b"=", space + 1, end) < 0
        ):
            raise UnsafeContent(f"layer {label}: malformed pax extended header record at {pos}")
        pos = end
    if data[pos:].strip(b"\0"):
        raise UnsafeContent(f"layer {label}: junk after the pax extended header records")
    for run in _DIGITS.finditer(data):
        if run.end() - run.start() > MAX_DIGIT_RUN:
            raise UnsafeContent(
                f"layer {label}: pax extended header has a run of {run.end() - run.start()} digits"
            )


def iter_members(tar: tarfile.TarFile, stream: TarStream, label: str) -> Iterator[tarfile.TarInfo]:
    """The archive's entries, one at a time, none of them kept.

    Raises UnsafeContent when global pax headers (which tarfile keeps for the
    rest of the archive) grow over MAX_HEADER, tarfile.TarError.
    """
    while (member := tar.next()) is not None:
        tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every entry
        if tar.pax_headers and _pax_size(tar.pax_headers) > MAX_HEADER:
            raise UnsafeContent(f"layer {label}: global pax headers are over {MAX_HEADER} bytes")
        yield member
        stream.begin_entry()


def _pax_size(headers: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in headers.items())


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
