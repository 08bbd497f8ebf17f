"""The streaming seam of a pull: an unpack that follows its blob's download.

A writer thread plays the download (``ContentStore.writer`` with a feed), the
test thread plays the unpack (``LayerStore.unpack`` on the feed). Every failure
the overlap makes possible must still leave nothing committed: no blob, no
layer directory, no temporary files.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.layers import Layer
from vmcri.errors import DigestMismatch, UnsafeContent
from vmcri.images.blob_feed import BlobFeed, FeedCancelled
from vmcri.images.content_store import BlobWriter, ContentStore
from vmcri.images.decompress import LayerReader
from vmcri.images.layer_store import LayerStore

Writer = Callable[[BlobWriter], None]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(compression: str = "gzip") -> tuple[bytes, str]:
    layer = Layer(compression).dir("d")
    for i in range(40):  # several MiB, so the unpack really overlaps the writes
        layer.file(f"d/f{i}", hashlib.sha256(str(i).encode()).digest() * 4096)
    blob, _, diff_id = layer.blob()
    return blob, diff_id


def _chunks(data: bytes, size: int = 64 << 10) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class _Download(threading.Thread):
    """Runs ``body`` inside ``ContentStore.writer`` with ``feed``, like Puller._download."""

    def __init__(
        self, store: ContentStore, digest: str, size: int, feed: BlobFeed, body: Writer
    ) -> None:
        super().__init__()
        self.args = (store, digest, size, feed, body)
        self.error: BaseException | None = None

    def run(self) -> None:
        store, digest, size, feed, body = self.args
        try:
            with store.writer(digest, size, feed) as w:
                body(w)
        except BaseException as exc:
            self.error = exc


def _stores(tmp_path: Path) -> tuple[ContentStore, LayerStore]:
    return ContentStore(tmp_path), LayerStore(tmp_path)


def _nothing_left(content: ContentStore, layers: LayerStore) -> None:
    assert list(content.ingest.iterdir()) == []
    assert list(content.blobs.iterdir()) == []
    assert list(layers.root.iterdir()) == []


def _run(
    tmp_path: Path, blob: bytes, diff_id: str, body: Writer, digest: str | None = None
) -> tuple[ContentStore, LayerStore, _Download]:
    content, layers = _stores(tmp_path)
    digest = digest or _digest(blob)
    feed = BlobFeed(digest, len(blob))
    dl = _Download(content, digest, len(blob), feed, body)
    dl.start()
    try:
        layers.unpack(diff_id, "", diff_id, feed)
    finally:
        dl.join(10)
    return content, layers, dl


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_unpack_follows_the_download(tmp_path: Path, compression: str) -> None:
    blob, diff_id = _layer(compression)

    def body(w: BlobWriter) -> None:
        for chunk in _chunks(blob):
            w.write(chunk)

    content, layers, dl = _run(tmp_path, blob, diff_id, body)
    assert dl.error is None
    assert content.has_blob(_digest(blob), len(blob))
    assert (layers.diff_dir(diff_id) / "d/f39").read_bytes() == hashlib.sha256(
        b"39"
    ).digest() * 4096


def test_digest_mismatch_found_after_the_unpack_started(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    started = threading.Event()

    def body(w: BlobWriter) -> None:
        for chunk in _chunks(blob):
            w.write(chunk)
            started.set()

    wrong = _digest(blob + b"!")  # right size, wrong digest: only the end can tell
    with pytest.raises(DigestMismatch):
        _run(tmp_path, blob, diff_id, body, digest=wrong)
    assert started.is_set()
    _nothing_left(*_stores(tmp_path))


def test_short_blob_fails_the_unpack(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    content, layers = _stores(tmp_path)
    feed = BlobFeed(_digest(blob), len(blob) + 10)  # the registry promised more

    def body(w: BlobWriter) -> None:
        for chunk in _chunks(blob):
            w.write(chunk)

    dl = _Download(content, _digest(blob), len(blob) + 10, feed, body)
    dl.start()
    with pytest.raises(DigestMismatch):
        layers.unpack(diff_id, "", diff_id, feed)
    dl.join(10)
    _nothing_left(content, layers)


def test_retry_resending_the_same_bytes_is_seamless(tmp_path: Path) -> None:
    blob, diff_id = _layer()

    def body(w: BlobWriter) -> None:
        half = len(blob) // 2
        for chunk in _chunks(blob[:half]):
            w.write(chunk)
        w.reset()  # what the registry client does after a dropped connection
        for chunk in _chunks(blob, 100_000):  # other chunk edges than the first attempt
            w.write(chunk)

    _content, layers, dl = _run(tmp_path, blob, diff_id, body)
    assert dl.error is None and layers.has(diff_id)


def test_retry_resending_other_bytes_fails(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    evil = bytearray(blob)
    evil[100] ^= 0xFF

    def body(w: BlobWriter) -> None:
        for chunk in _chunks(blob[: len(blob) // 2]):
            w.write(chunk)
        w.reset()
        for chunk in _chunks(bytes(evil)):
            w.write(chunk)

    with pytest.raises(DigestMismatch, match="resent different bytes"):
        _run(tmp_path, blob, diff_id, body)
    _nothing_left(*_stores(tmp_path))


def test_malicious_entry_cancels_the_download(tmp_path: Path) -> None:
    blob, _, diff_id = Layer().file("ok", b"1").file("../escape", b"2").blob()
    padding = b"\0" * (4 << 20)  # trailing zeros keep the download going after the bad entry
    blob_long = blob + padding
    finish = threading.Event()

    def body(w: BlobWriter) -> None:
        w.write(blob)
        finish.wait(10)  # the unpack has failed by now
        for chunk in _chunks(padding):
            w.write(chunk)

    content, layers = _stores(tmp_path)
    feed = BlobFeed(_digest(blob_long), len(blob_long))
    dl = _Download(content, _digest(blob_long), len(blob_long), feed, body)
    dl.start()
    with pytest.raises(UnsafeContent):
        layers.unpack(diff_id, "", diff_id, feed)
    finish.set()
    dl.join(10)
    assert isinstance(dl.error, FeedCancelled)
    _nothing_left(content, layers)


def test_layer_waits_for_the_blob_commit(tmp_path: Path) -> None:
    """The whole blob is written and verified, but committing it fails: no layer."""
    blob, diff_id = _layer()
    content, layers = _stores(tmp_path)
    feed = BlobFeed(_digest(blob), len(blob))

    def body(w: BlobWriter) -> None:
        w.write(blob)
        # Make the rename fail: the blob's final name is taken by a directory.
        content.blob_path(_digest(blob)).mkdir()
        (content.blob_path(_digest(blob)) / "x").touch()

    dl = _Download(content, _digest(blob), len(blob), feed, body)
    dl.start()
    with pytest.raises(OSError):
        layers.unpack(diff_id, "", diff_id, feed)
    dl.join(10)
    assert isinstance(dl.error, OSError)
    assert list(layers.root.iterdir()) == [] and list(content.ingest.iterdir()) == []


def test_existing_blob_feeds_at_once(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    content, layers = _stores(tmp_path)
    content.put_blob(_digest(blob), blob)
    feed = BlobFeed(_digest(blob), len(blob))
    feed.committed(content.blob_path(_digest(blob)))
    assert layers.unpack(diff_id, "", diff_id, feed).diff_id == diff_id


def test_layer_reader_gathers_the_magic_from_short_reads() -> None:
    blob, diff_id = _layer()

    class Trickle:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int) -> bytes:
            n = min(n, 1 if self.pos < 8 else 1 << 16)
            out = blob[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    reader = LayerReader(Trickle())
    reader.drain()
    assert reader.compression == "gzip" and reader.digest() == diff_id


def _inflaters() -> list[object]:
    import zlib

    mods: list[object] = [zlib]
    try:
        from isal import isal_zlib
    except ImportError:
        return mods
    return [*mods, isal_zlib]


@pytest.mark.parametrize("inflate", _inflaters(), ids=lambda m: m.__name__)
def test_gzip_members_padding_and_corruption(
    monkeypatch: pytest.MonkeyPatch, inflate: object
) -> None:
    import gzip
    import io

    from vmcri.images import decompress

    monkeypatch.setattr(decompress, "INFLATE", inflate)
    raw = bytes(range(256)) * 20_000
    # Two gzip members and trailing zero padding, as some layer tools write them.
    blob = gzip.compress(raw[:3000], mtime=0) + gzip.compress(raw[3000:], mtime=0) + b"\0" * 700
    reader = LayerReader(io.BytesIO(blob))
    out = b"".join(iter(lambda: reader.read(1 << 16), b""))
    assert out == raw and reader.digest() == _digest(raw)
    broken = bytearray(gzip.compress(raw, mtime=0))
    broken[len(broken) // 2 : len(broken) // 2 + 64] = b"\xff" * 64
    with pytest.raises(UnsafeContent):
        LayerReader(io.BytesIO(bytes(broken))).drain()
    with pytest.raises(UnsafeContent, match="truncated"):
        LayerReader(io.BytesIO(gzip.compress(raw, mtime=0)[:5000])).drain()
