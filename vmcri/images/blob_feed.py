"""A blob that one thread downloads while another reads it: the pull's streaming seam.

A layer's unpack does not wait for its download: the download thread writes
the ingest file and announces how far it got; the unpack thread reads the same
file (through the page cache, by ``pread``) up to that point and waits for
more. Nothing is trusted early: the reader sees end-of-file only once the whole
blob is in and its digest and size have been checked, so the decompressor and
the tar parser cannot finish a layer from an unverified blob, and the layer
store waits for :meth:`BlobFeed.wait_committed` (the blob renamed under its
digest) before it renames the unpacked layer into place.

States, changed only under the feed's condition::

    pending ──start──▶ growing ──verified──▶ verified ──committed──▶ committed
       │                  │  ▲ restarted (a retried transfer)
       └──────────────────┴──┴──────────failed(exc)──────────▶ failed

A retried transfer truncates the ingest file and starts over; the reader keeps
its position, and the writer checks that the resent bytes it already handed
out are the same (see ``BlobWriter``), so a reader never mixes two versions.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from vmcri.errors import StateCorrupt, VmcriError


class FeedCancelled(VmcriError):
    """The reading side gave up (its unpack failed), so the download stops.

    Internal to a pull: the error the pull reports is the unpack's.
    """


class BlobFeed:
    """The writer's progress on one blob, shared with at most one reader."""

    def __init__(self, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size
        self._cond = threading.Condition()
        self._path: Path | None = None
        self._written = 0
        self._generation = 0  # bumped by every restart
        self._verified = False
        self._committed = False
        self._error: BaseException | None = None
        self._cancelled = False

    # -- writer side ------------------------------------------------------------

    def start(self, path: Path) -> None:
        """The ingest file exists at ``path`` (empty)."""
        with self._cond:
            self._path = path
            self._cond.notify_all()

    def grew(self, written: int) -> None:
        """Bytes ``[0, written)`` of the file are written. Raises FeedCancelled."""
        with self._cond:
            if self._cancelled:
                raise FeedCancelled(f"blob {self.digest}: download cancelled")
            self._written = written
            self._cond.notify_all()

    def restarted(self) -> None:
        """The transfer starts over: call *before* truncating the file."""
        with self._cond:
            self._generation += 1
            self._written = 0

    def verified(self) -> None:
        """All ``size`` bytes are in and hash to ``digest``: readers may see EOF."""
        with self._cond:
            self._written = self.size
            self._verified = True
            self._cond.notify_all()

    def rename(self, src: Path, dst: Path) -> None:
        """Move the file under the feed's lock, so a reader never opens a stale path."""
        with self._cond:
            os.replace(src, dst)
            self._path = dst

    def committed(self, path: Path) -> None:
        """The verified blob is at ``path`` for good (also: it was there already)."""
        with self._cond:
            self._path = path
            self._written = self.size
            self._verified = self._committed = True
            self._cond.notify_all()

    def failed(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    # -- reader side ------------------------------------------------------------

    def cancel(self) -> None:
        """The reader gave up: the writer stops at its next chunk."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def reader(self) -> FeedReader:
        return FeedReader(self)

    def wait_committed(self) -> None:
        """Block until the blob is committed. Raises what the download raised."""
        with self._cond:
            while not self._committed:
                self._raise_failure()
                self._cond.wait()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise FeedCancelled(f"blob {self.digest}: download cancelled")


class FeedReader:
    """Reads a :class:`BlobFeed` from the start, blocking for bytes not yet written.

    ``read`` raises whatever the download raised (DigestMismatch, RegistryError,
    DeadlineExceeded, ...), so a failed download fails the unpack reading it;
    StateCorrupt if the ingest file shrinks behind the writer's back.
    """

    def __init__(self, feed: BlobFeed) -> None:
        self._feed = feed
        self._fd: int | None = None
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        feed = self._feed
        if n is None or n < 0:
            n = feed.size
        while True:
            with feed._cond:
                while True:
                    feed._raise_failure()
                    if self._fd is None and feed._path is not None:
                        self._fd = os.open(feed._path, os.O_RDONLY | os.O_CLOEXEC)
                    if self._fd is not None and self.pos < feed._written:
                        break
                    if feed._verified and self.pos >= feed.size:
                        return b""
                    feed._cond.wait()
                want = min(n, feed._written - self.pos)
                generation = feed._generation
            data = os.pread(self._fd, want, self.pos)
            with feed._cond:
                if generation != feed._generation:
                    continue  # truncated under us by a retry: read the new bytes
            if not data:  # only someone else truncating the ingest file does this
                raise StateCorrupt(f"blob {feed.digest}: ingest file shrank while being read")
            self.pos += len(data)
            return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FeedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
