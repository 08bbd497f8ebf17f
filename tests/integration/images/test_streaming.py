"""The streamed pull against a real registry: failures that strike after the unpack began."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.layers import Layer
from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry
from vmcri.errors import DigestMismatch
from vmcri.images.auth import Auth, Deadline
from vmcri.images.registries_conf import Endpoint
from vmcri.images.registry_client import BlobSink, RegistryClient, RetryPolicy
from vmcri.images.service import ImageService

pytestmark = pytest.mark.integration


class _Tamper:
    """A sink in front of the store's writer that breaks one transfer late in the blob."""

    def __init__(self, inner: BlobSink, size: int, mode: str) -> None:
        self.inner, self.size, self.mode = inner, size, mode
        self.seen = 0
        self.fired = False

    def write(self, data: bytes | memoryview) -> object:
        late = self.seen + len(data) > self.size * 3 // 4
        self.seen += len(data)
        if late and not self.fired:
            self.fired = True
            if self.mode == "corrupt":  # same size, one bit off: only the digest tells
                buf = bytearray(data)
                buf[-1] ^= 1
                return self.inner.write(bytes(buf))
            raise ConnectionResetError("injected: connection dropped mid-blob")
        return self.inner.write(data)

    def reset(self) -> None:
        self.seen = 0
        self.inner.reset()


def _service(tmp_path: Path, conf: Path, target: str, mode: str) -> tuple[ImageService, list[str]]:
    fired: list[str] = []

    class Client(RegistryClient):
        def fetch_blob(self, digest: str, sink: BlobSink) -> None:
            if digest != target:
                super().fetch_blob(digest, sink)
                return
            size = _sizes[digest]
            tamper = _Tamper(sink, size, mode)
            super().fetch_blob(digest, tamper)
            if tamper.fired:
                fired.append(digest)

    def factory(ep: Endpoint, auth: Auth, deadline: Deadline) -> RegistryClient:
        return Client(ep, auth, deadline, retry=RetryPolicy(first_backoff_s=0.01))

    return ImageService(tmp_path / "root", conf, client_factory=factory), fired


_sizes: dict[str, int] = {}


def _push(registry: LocalRegistry, name: str) -> tuple[str, str]:
    """A busybox image plus a 6 MiB layer; returns (ref, that layer's blob digest)."""
    big = Layer("gzip").dir("big")
    for i in range(6):
        big.file(f"big/f{i}", os.urandom(1 << 20))
    pushed = push_busybox_image(registry.host, name, extra_layers=[big])
    digest = pushed.layer_digests[-1]
    blob = big.blob()[0]
    _sizes[digest] = len(blob)
    return f"{registry.host}/{name}", digest


def test_corrupt_blob_found_after_unpack_began_commits_nothing(
    tmp_path: Path, registry: LocalRegistry, conf: Path
) -> None:
    ref, digest = _push(registry, "stream/corrupt:1")
    svc, fired = _service(tmp_path, conf, digest, "corrupt")
    with pytest.raises(DigestMismatch):
        svc.pull(ref)
    assert fired == [digest]
    assert svc.list() == []
    assert not svc.content.has_blob(digest)
    assert list(svc.content.ingest.iterdir()) == []
    layer_dirs = [p.name for p in svc.layers.root.iterdir()]
    assert not [n for n in layer_dirs if n.startswith(".tmp")]
    assert len(layer_dirs) == 1  # only the busybox base below it, complete and reusable
    # The next pull (the registry is honest again) finishes the job.
    honest = ImageService(tmp_path / "root", conf)
    honest.pull(ref)
    info = honest.image_for_container(ref)
    assert sorted(os.listdir(Path(info.layer_dirs[-1]) / "big")) == [f"f{i}" for i in range(6)]


def test_dropped_connection_mid_blob_is_retried_under_a_running_unpack(
    tmp_path: Path, registry: LocalRegistry, conf: Path
) -> None:
    ref, digest = _push(registry, "stream/retry:1")
    svc, fired = _service(tmp_path, conf, digest, "drop")
    image_id = svc.pull(ref)
    assert fired == [digest]
    assert svc.content.has_blob(digest, _sizes[digest])
    info = svc.image_for_container(ref)
    assert info.id == image_id
    assert (Path(info.layer_dirs[-1]) / "big/f5").stat().st_size == 1 << 20
