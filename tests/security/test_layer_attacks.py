"""Hostile layers that strike while the layer is still downloading.

Unpack follows the download (``BlobFeed``), so everything here happens before
the blob's digest is checked: pinning an image by digest does not help. Each
test builds its hostile tar itself and asserts the effect on the daemon stays
bounded (memory, time, bytes written) and that the error names what it refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.layers import Layer
from vmcri.errors import ResourceExhausted, UnsafeContent
from vmcri.host.disk import free_bytes
from vmcri.images.auth import Auth, Deadline
from vmcri.images.content_store import ContentStore
from vmcri.images.layer_store import LayerStore
from vmcri.images.manifest import ACCEPT
from vmcri.images.pull import Puller
from vmcri.images.reference import parse_reference
from vmcri.images.registries_conf import Endpoint, RegistriesConf
from vmcri.images.registry_client import BlobSink, RegistryClient
from vmcri.images.unpack import DEFAULT_LIMITS, UnpackLimits, unpack_layer
from vmcri.images.write_budget import DEFAULT_MAX_PULL_BYTES, FreeSpace


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(*entries: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _unpack(tmp: Path, raw: bytes, limits: UnpackLimits = DEFAULT_LIMITS) -> Path:
    dest = tmp / f"d{len(list(tmp.iterdir()))}"
    dest.mkdir()
    unpack_layer(io.BytesIO(gzip.compress(raw, 1)), dest, (), _digest(raw), limits)
    return dest


def _sparse10(
    name: str, realsize: int, segments: list[tuple[int, bytes]], count: int | None = None
) -> tuple[tarfile.TarInfo, bytes]:
    """A GNU sparse 1.0 member (pax format): the map sits at the start of the data."""
    text = f"{len(segments) if count is None else count}\n"
    text += "".join(f"{off}\n{len(data)}\n" for off, data in segments)
    if count is not None:
        text += "0\n0\n" * (count - len(segments))
    mapped = text.encode()
    mapped += b"\0" * (-len(mapped) % 512)
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(realsize),
    }
    return info, mapped + b"".join(data for _, data in segments)


def _peak(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak Python memory while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    err: BaseException | None = None
    try:
        fn()
    except Exception as exc:
        err = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, err


# -- GNU sparse ---------------------------------------------------------------


def test_sparse_map_bomb_costs_no_memory(tmp_path: Path) -> None:
    info, data = _sparse10("bomb", 1 << 20, [], count=1_000_000)
    blob = gzip.compress(_tar((info, data)), 9)
    assert len(blob) < 64 << 10  # a few kB on the wire...
    peak, err = _peak(lambda: _unpack(tmp_path, _tar((info, data))))
    assert peak < 16 << 20, f"sparse map cost {peak >> 20} MiB"  # ...was 175 MiB
    assert isinstance(err, UnsafeContent)
    assert "sparse" in err.message or "header" in err.message


def test_sparse_holes_are_holes_not_zeros(tmp_path: Path) -> None:
    size = 64 << 20
    info, data = _sparse10("holes", size, [(4096, b"head"), (size - 4, b"tail")])
    raw = _tar((info, data), (tarfile.TarInfo("after"), b"next"))
    assert len(gzip.compress(raw, 9)) < 1024
    d = _unpack(tmp_path, raw)
    st = os.stat(d / "holes")
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes written for 8 of data"
    with open(d / "holes", "rb") as f:
        assert os.pread(f.fileno(), 4, 4096) == b"head"
        assert os.pread(f.fileno(), 4, size - 4) == b"tail"
        assert os.pread(f.fileno(), 8, 0) == b"\0" * 8
    assert (d / "after").read_bytes() == b"next"


def test_sparse_segment_outside_the_file_is_refused(tmp_path: Path) -> None:
    info, data = _sparse10("liar", 100, [(1 << 30, b"x")])
    with pytest.raises(UnsafeContent, match="liar"):
        _unpack(tmp_path, _tar((info, data)))


def test_hard_link_to_a_sparse_lower_file_keeps_its_holes(tmp_path: Path) -> None:
    size = 256 << 20
    info, data = _sparse10("big", size, [(size - 4, b"tail")])
    lower = _unpack(tmp_path, _tar((info, data)))
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.LNKTYPE, "big"
    upper = tmp_path / "upper"
    upper.mkdir()
    raw = _tar((link, None))
    unpack_layer(io.BytesIO(raw), upper, (lower,), _digest(raw))
    st = os.stat(upper / "big")
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20, "copy-up wrote the holes out"


# -- one write budget per pull --------------------------------------------------


class _FakeRegistry(RegistryClient):
    """Serves one image from memory, as a RegistryClient would (unit-level fake)."""

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__(Endpoint("registry.test", "lib/img", insecure=False, mirror=False))
        self.blobs: dict[str, bytes] = {}
        descs, diff_ids = [], []
        for layer in layers:
            blob, media, diff_id = layer.blob()
            self.blobs[_digest(blob)] = blob
            descs.append({"mediaType": media, "digest": _digest(blob), "size": len(blob)})
            diff_ids.append(diff_id)
        cfg = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        self.blobs[_digest(cfg)] = cfg
        self.layer_digests = [str(d["digest"]) for d in descs]
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _digest(cfg),
                    "size": len(cfg),
                },
                "layers": descs,
            }
        ).encode()

    def client(self, endpoint: Endpoint, auth: Auth, deadline: Deadline) -> RegistryClient:
        return self

    def get_manifest(self, reference: str, accept: str = ACCEPT) -> tuple[bytes, str]:
        return self.manifest, "application/vnd.oci.image.manifest.v1+json"

    def fetch_blob(self, digest: str, sink: BlobSink) -> None:
        sink.write(self.blobs[digest])


def _puller(
    tmp: Path,
    reg: _FakeRegistry,
    max_pull_bytes: int = DEFAULT_MAX_PULL_BYTES,
    free_space: FreeSpace = free_bytes,
) -> tuple[Puller, LayerStore]:
    layers = LayerStore(tmp)
    puller = Puller(
        ContentStore(tmp),
        layers,
        RegistriesConf(),
        lambda _: lambda: None,
        reg.client,
        max_pull_bytes=max_pull_bytes,
        free_space=free_space,
    )
    return puller, layers


def _leftovers(layers: LayerStore) -> list[str]:
    return [p.name for p in layers.root.iterdir() if p.name.startswith(".tmp-")]


def test_one_budget_covers_every_layer_of_a_pull(tmp_path: Path) -> None:
    reg = _FakeRegistry(
        [Layer().file("a", os.urandom(600 << 10)), Layer().file("b", os.urandom(600 << 10))]
    )
    puller, layers = _puller(tmp_path, reg, max_pull_bytes=1 << 20)
    with pytest.raises(ResourceExhausted) as info:
        puller.pull(parse_reference("127.0.0.1:1/img:x"))
    assert reg.layer_digests[1] in info.value.message  # each layer alone fits: the sum does not
    assert _leftovers(layers) == []
    assert len(layers.chain_dirs()) == 1  # the first layer is whole and may stay


def test_pull_refused_when_the_layer_store_has_no_room(tmp_path: Path) -> None:
    reg = _FakeRegistry([Layer().file("a", os.urandom(600 << 10))])
    puller, layers = _puller(tmp_path, reg, free_space=lambda _: 100 << 10)
    with pytest.raises(ResourceExhausted, match="free") as info:
        puller.pull(parse_reference("127.0.0.1:1/img:x"))
    assert reg.layer_digests[0] in info.value.message
    assert list(layers.root.iterdir()) == []


# -- special files ------------------------------------------------------------


def test_fifo_with_xattrs_does_not_hang_the_chain(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    fifo.pax_headers = {"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.security.capability": "x"}
    raw = _tar((tarfile.TarInfo("d"), b"1"), (fifo, None))
    blob = gzip.compress(raw)
    layers = LayerStore(tmp_path)
    blob_path = tmp_path / "blob"
    blob_path.write_bytes(blob)
    chain = _digest(raw)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            layers.unpack(chain, "", chain, blob_path)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # release the blocked open so the thread can end
        pipe = next(layers.root.glob(".tmp-*/diff/pipe"))
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("unpacking a FIFO with xattrs blocked")
    assert errors == []
    assert stat.S_ISFIFO(os.lstat(layers.diff_dir(chain) / "pipe").st_mode)
    # The chain lock is free: a later pull of the same chain and of another layer work.
    assert layers.unpack(chain, "", chain, blob_path).entries == 2
    other = Layer().file("x", b"y")
    blob2, _, diff2 = other.blob()
    (tmp_path / "blob2").write_bytes(blob2)
    assert layers.unpack(diff2, "", diff2, tmp_path / "blob2").entries == 1


# -- many entries, deep paths ---------------------------------------------------


class _Watched:
    """The raw layer, noting how much memory the daemon holds when the parser reaches EOF."""

    def __init__(self, raw: bytes) -> None:
        self._src = io.BytesIO(raw)
        self.held_at_eof: int | None = None

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        if not data and self.held_at_eof is None:
            self.held_at_eof = tracemalloc.get_traced_memory()[0]
        return data


def test_entries_are_not_kept_in_memory(tmp_path: Path) -> None:
    n = 1500
    entries = []
    for i in range(n):
        info = tarfile.TarInfo(f"f{i}")
        info.pax_headers = {"comment": "c" * 4000}  # tarfile keeps it with the entry
        entries.append((info, b""))
    raw = _tar(*entries)
    source = _Watched(raw)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        unpack_layer(source, tmp_path, (), _digest(raw))
    finally:
        tracemalloc.stop()
    assert source.held_at_eof is not None
    held = source.held_at_eof - before
    assert held < 2 << 20, f"{held // n} bytes of daemon memory kept per entry"


def test_entry_count_is_capped(tmp_path: Path) -> None:
    raw = _tar(*((tarfile.TarInfo(f"f{i}"), b"") for i in range(101)))
    with pytest.raises(UnsafeContent, match="more than 100 entries"):
        _unpack(tmp_path, raw, limits=UnpackLimits(max_entries=100))


def test_deep_path_is_refused_quickly(tmp_path: Path) -> None:
    raw = _tar((tarfile.TarInfo("a/" * 400 + "f"), b"x"))
    start = time.monotonic()
    with pytest.raises(UnsafeContent, match="deep"):
        _unpack(tmp_path, raw)
    assert time.monotonic() - start < 1.0


def test_deep_tree_unpacks_in_linear_time(tmp_path: Path) -> None:
    depth = 120
    entries = [(tarfile.TarInfo("d/" * k + "f"), b"x") for k in range(1, depth + 1)]
    raw = _tar(*entries)
    start = time.monotonic()
    d = _unpack(tmp_path, raw)
    elapsed = time.monotonic() - start
    assert (d / ("d/" * depth + "f")).read_bytes() == b"x"
    assert elapsed < 1.0, f"{elapsed * 1000 / depth:.1f} ms per entry at depth <= {depth}"


# -- extended headers -------------------------------------------------------------


def test_large_pax_header_is_refused_before_parsing(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    raw = _tar((info, b"1 " * (1 << 20)), (tarfile.TarInfo("f"), b"x"), fmt=tarfile.USTAR_FORMAT)
    with pytest.raises(UnsafeContent, match="extended header of 2097152 bytes"):
        _unpack(tmp_path, raw)


def test_pax_digit_run_cve_2024_6232_costs_no_cpu(tmp_path: Path) -> None:
    # CPython 3.11.7 searches every pax header for "hdrcharset" with a regex that
    # backtracks quadratically over a run of digits: 60 kB of them cost ~8 s.
    record = " comment=" + "1" * 60_000 + "\n"
    body = f"{len(record) + 5}{record}".encode()
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    raw = _tar((info, body), (tarfile.TarInfo("f"), b"x"), fmt=tarfile.USTAR_FORMAT)
    start = time.monotonic()
    with pytest.raises(UnsafeContent, match="run of 60000 digits"):
        _unpack(tmp_path, raw)
    assert time.monotonic() - start < 0.5


def test_malformed_pax_records_are_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    raw = _tar((info, b"999 path=x\n"), (tarfile.TarInfo("f"), b"x"), fmt=tarfile.USTAR_FORMAT)
    with pytest.raises(UnsafeContent, match="malformed pax"):
        _unpack(tmp_path, raw)


def test_gnu_long_name_is_capped(tmp_path: Path) -> None:
    raw = _tar((tarfile.TarInfo("x/" * 50_000 + "f"), b"x"), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(UnsafeContent, match="extended header"):
        _unpack(tmp_path, raw)


def test_global_pax_headers_do_not_accumulate(tmp_path: Path) -> None:
    entries = []
    for i in range(40):
        glob = tarfile.TarInfo("././@PaxGlobal")
        glob.type = tarfile.XGLTYPE
        record = f" k{i}={'v' * 60000}\n"
        body = f"{len(record) + 5}{record}".encode()  # a 5-digit length field
        entries.append((glob, body))
        entries.append((tarfile.TarInfo(f"f{i}"), b"x"))
    peak, err = _peak(lambda: _unpack(tmp_path, _tar(*entries, fmt=tarfile.USTAR_FORMAT)))
    assert isinstance(err, UnsafeContent)
    assert "global" in err.message
    assert peak < 16 << 20


def test_existing_protections_still_hold_after_the_rewrite(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(UnsafeContent, match="device"):
        _unpack(tmp_path, _tar((dev, None)))
    evil = tarfile.TarInfo("evil")
    evil.type, evil.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
    d = _unpack(tmp_path, _tar((evil, None), (tarfile.TarInfo("evil/pwned"), b"x")))
    assert not (tmp_path / "outside").exists()
    assert (d / str(tmp_path / "outside").lstrip("/") / "pwned").read_bytes() == b"x"
