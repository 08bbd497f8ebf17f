"""Content-addressed blobs and image records on disk.

A blob is written to ``blobs/ingest/`` while its digest and size are checked
on the fly, then renamed to ``blobs/sha256/<hex>``: a blob under its digest
name is always complete and correct, and a mismatch leaves nothing behind.
Image records are JSON written atomically and only after every blob and layer
they name is in place, so a pull killed at any point leaves either no record
or a complete image. Ingest files of dead processes are swept at start-up.

A layer blob may be read while it is written (``BlobFeed``): the reader sees
only bytes already written, end-of-file only after the digest check, and the
layer built from it is committed only after the blob is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmcri.errors import DigestMismatch, StateCorrupt
from vmcri.images.blob_feed import BlobFeed
from vmcri.images.reference import is_digest
from vmcri.images.trust.evidence import Verification
from vmcri.store.atomic import fsync_dir, remove_file, write_atomic


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``. Raises ValueError for anything else."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.split(":", 1)[1]


@dataclass(frozen=True)
class LayerRecord:
    digest: str  # compressed blob digest
    size: int  # compressed size
    media_type: str
    diff_id: str
    chain_id: str


@dataclass(frozen=True)
class ImageRecord:
    """What the store keeps about one image (one config digest)."""

    id: str  # config digest: the image ID everywhere
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    manifest_digest: str
    layers: tuple[LayerRecord, ...]
    size: int  # bytes of config + layers as stored (compressed)
    created_ns: int
    pinned: bool = False
    uid: int | None = None
    username: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the image config's "config"
    # What the pulls checked (trust/evidence.py): CreateContainer checks the pod's
    # namespace's policy against it. Absent in records written before it was kept.
    verified: tuple[Verification, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ImageRecord:
        """Raises StateCorrupt when ``data`` is not a record."""
        try:
            doc = json.loads(data)
            layers = tuple(LayerRecord(**layer) for layer in doc.pop("layers"))
            doc["repo_tags"] = tuple(doc["repo_tags"])
            doc["repo_digests"] = tuple(doc["repo_digests"])
            doc["verified"] = tuple(Verification.from_json(v) for v in doc.get("verified", ()))
            return cls(layers=layers, **doc)
        except (ValueError, TypeError, KeyError) as exc:
            raise StateCorrupt(f"image record {where}: {exc}") from exc


class BlobWriter:
    """An ingest file that hashes and counts what is written; a ``BlobSink``.

    Writes go straight to the file descriptor (the registry client hands over
    1 MiB chunks, so a userspace buffer would only add a copy) and are then
    announced to the optional :class:`BlobFeed`, whose reader may already be
    unpacking them. After a retried transfer (``reset``) the resent bytes that
    were already announced must hash the same as before, or the write raises
    DigestMismatch: a reader never sees two versions of the same range.
    """

    def __init__(self, path: Path, digest: str, size: int, feed: BlobFeed | None = None) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self.written = 0
        self._hash = hashlib.sha256()
        self._feed = feed
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        self._replay_len = 0  # bytes of an earlier attempt the new one must repeat
        self._replay_digest: bytes | None = None
        if feed is not None:
            feed.start(path)

    def write(self, data: bytes | memoryview) -> int:
        """Raises DigestMismatch (too long, or a retry resent different bytes),
        FeedCancelled (the reader gave up), OSError."""
        n = len(data)
        if self.written + n > self.size:
            raise DigestMismatch(f"blob {self.digest}: more than the announced {self.size} bytes")
        if self._replay_digest is not None and self.written + n >= self._replay_len:
            cut = self._replay_len - self.written
            self._hash.update(data[:cut])
            if self._hash.digest() != self._replay_digest:
                raise DigestMismatch(
                    f"blob {self.digest}: the registry resent different bytes on a retry"
                )
            self._replay_digest = None
            self._hash.update(data[cut:])
        else:
            self._hash.update(data)
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.written += n
        if self._feed is not None:
            self._feed.grew(self.written)
        return n

    def reset(self) -> None:
        """Start over after an interrupted transfer."""
        if self._replay_digest is None and self.written:
            self._replay_len, self._replay_digest = self.written, self._hash.digest()
        if self._feed is not None:
            self._feed.restarted()
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)  # truncating does not move the write offset
        self._hash = hashlib.sha256()
        self.written = 0

    def verify(self) -> None:
        """Raises DigestMismatch if the content is not what was announced."""
        if self.written != self.size:
            raise DigestMismatch(
                f"blob {self.digest}: got {self.written} bytes, expected {self.size}"
            )
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            raise DigestMismatch(f"blob {self.digest}: content hashes to {got}")
        if self._feed is not None:
            self._feed.verified()

    def sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ContentStore:
    """Blobs and image records under ``<root>/images``."""

    def __init__(self, images_root: Path) -> None:
        self.root = images_root
        self.blobs = images_root / "blobs" / "sha256"
        self.ingest = images_root / "blobs" / "ingest"
        self.records = images_root / "records"
        for d in (self.blobs, self.ingest, self.records):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = threading.RLock()  # guards records and the set of in-use digests

    # -- blobs ----------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read_blob(self, digest: str, limit: int) -> bytes:
        """Read a small blob (manifest, config). Raises FileNotFoundError, DigestMismatch."""
        with open(self.blob_path(digest), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise DigestMismatch(f"blob {digest}: larger than {limit} bytes")
        return data

    @contextlib.contextmanager
    def writer(self, digest: str, size: int, feed: BlobFeed | None = None) -> Iterator[BlobWriter]:
        """Yield a writer; on normal exit verify and publish the blob, else discard it.

        With a ``feed``, a reader follows the download; it is told when the
        blob is verified (before the fsync), committed, or failed.
        Raises DigestMismatch (nothing is kept) when content or size differ.
        """
        hex_of(digest)
        path = self.ingest / f"{os.getpid()}-{secrets.token_hex(8)}"
        final = self.blob_path(digest)
        try:
            w = BlobWriter(path, digest, size, feed)
        except BaseException as exc:
            if feed is not None:
                feed.failed(exc)
            raise
        try:
            yield w
            w.verify()
            w.sync()
            if feed is not None:
                feed.rename(path, final)
            else:
                os.replace(path, final)
            fsync_dir(self.blobs)
            if feed is not None:
                feed.committed(final)
        except BaseException as exc:
            w.close()
            if feed is not None:
                feed.failed(exc)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store a small blob already in memory. Raises DigestMismatch."""
        with self.writer(digest, len(data)) as w:
            w.write(data)

    def blob_digests(self) -> set[str]:
        return {"sha256:" + p.name for p in self.blobs.iterdir() if len(p.name) == 64}

    def remove_blob(self, digest: str) -> None:
        remove_file(self.blob_path(digest))

    def sweep_ingest(self) -> int:
        """Delete ingest files of processes that are gone; returns how many."""
        removed = 0
        for p in self.ingest.iterdir():
            pid_text = p.name.split("-", 1)[0]
            if pid_text.isdigit() and pid_alive(int(pid_text)):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed += 1
        return removed

    # -- records --------------------------------------------------------------

    def _record_path(self, image_id: str) -> Path:
        return self.records / f"{hex_of(image_id)}.json"

    def save(self, record: ImageRecord) -> None:
        write_atomic(self._record_path(record.id), record.to_json())

    def update(
        self, image_id: str, change: Callable[[ImageRecord], ImageRecord]
    ) -> ImageRecord | None:
        """Apply ``change`` to the stored record under the lock and save the result;
        None (nothing written) when the image is gone. Raises StateCorrupt."""
        with self.lock:
            old = self.load(image_id)
            if old is None:
                return None
            new = change(old)
            if new != old:
                self.save(new)
            return new

    def load(self, image_id: str) -> ImageRecord | None:
        """Raises StateCorrupt for an unreadable record."""
        try:
            data = self._record_path(image_id).read_bytes()
        except FileNotFoundError:
            return None
        return ImageRecord.from_json(data, image_id)

    def all(self) -> list[ImageRecord]:
        """Every image record. Raises StateCorrupt for an unreadable record."""
        out = []
        for p in sorted(self.records.glob("*.json")):
            try:
                out.append(ImageRecord.from_json(p.read_bytes(), p.name))
            except FileNotFoundError:
                continue
        return out

    def delete(self, image_id: str) -> None:
        remove_file(self._record_path(image_id))


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
