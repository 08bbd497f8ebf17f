"""One image pull: resolve the manifest, fetch blobs, unpack layers, write the record.

The order is what makes a ``kill -9`` harmless: blobs appear under their digest
only when verified, layer directories only when fully unpacked, and the image
record, the only thing that makes an image visible, is written last. A pull
that is interrupted leaves reusable blobs and layers; the next pull skips them.

Downloads run in a small thread pool while layers are unpacked in order on
the calling thread (unpacking a layer needs the layers below it). The two
overlap: a layer's unpack reads its blob as it is downloaded (``BlobFeed``),
so the pull costs about max(download, unpack) instead of their sum, while the
commit order above stays: the blob is verified and renamed before its layer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from vmcri.errors import (
    DigestMismatch,
    NotFound,
    PermissionDenied,
    RegistryError,
    VmcriError,
)
from vmcri.host.disk import free_bytes
from vmcri.images.auth import NO_AUTH, Auth, Deadline
from vmcri.images.blob_feed import BlobFeed, FeedCancelled
from vmcri.images.content_store import ContentStore, ImageRecord, LayerRecord
from vmcri.images.layer_store import KeyedLocks, LayerStore, chain_ids
from vmcri.images.manifest import (
    INDEX_TYPES,
    MAX_CONFIG_BYTES,
    Descriptor,
    media_type_of,
    parse_config,
    parse_manifest,
    select_platform,
)
from vmcri.images.reference import Reference
from vmcri.images.registries_conf import Endpoint, RegistriesConf
from vmcri.images.registry_client import RegistryClient
from vmcri.images.trust.evidence import AcceptedSignature, Verification
from vmcri.images.trust.policy import Policy
from vmcri.images.trust.verifier import ImageTrust
from vmcri.images.write_budget import (
    DEFAULT_MAX_PULL_BYTES,
    FreeSpace,
    WriteBudget,
)
from vmcri.metrics import families as metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullProgress:
    """A snapshot for progress displays."""

    phase: str  # "resolving", "downloading", "unpacking", "done"
    layers_total: int = 0
    layers_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0


ProgressFn = Callable[[PullProgress], None]
ClientFactory = Callable[[Endpoint, Auth, Deadline], RegistryClient]


def _default_client(endpoint: Endpoint, auth: Auth, deadline: Deadline) -> RegistryClient:
    return RegistryClient(endpoint, auth, deadline)


class _Progress:
    def __init__(self, fn: ProgressFn | None) -> None:
        self._fn = fn
        self.state = PullProgress("resolving")
        self._last = 0.0

    def update(self, force: bool = False, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]
        if self._fn is None:
            return
        now = time.monotonic()
        if force or now - self._last > 0.1:
            self._last = now
            self._fn(self.state)

    def add_bytes(self, n: int) -> None:
        self.update(bytes_done=self.state.bytes_done + n)


class _CountingSink:
    def __init__(self, inner: object, progress: _Progress) -> None:
        self._inner = inner
        self._progress = progress
        self._count = 0

    def write(self, data: bytes | memoryview) -> object:
        self._count += len(data)
        self._progress.add_bytes(len(data))
        metrics.image_bytes_received(len(data))
        return self._inner.write(data)  # type: ignore[attr-defined]

    def reset(self) -> None:
        self._progress.add_bytes(-self._count)
        self._count = 0
        self._inner.reset()  # type: ignore[attr-defined]


class Puller:
    """Pulls images into a content store and layer store; shared by all pulls."""

    def __init__(
        self,
        content: ContentStore,
        layers: LayerStore,
        conf: RegistriesConf,
        active: Callable[[set[str]], Callable[[], None]],
        client_factory: ClientFactory = _default_client,
        download_workers: int = 3,
        max_pull_bytes: int = DEFAULT_MAX_PULL_BYTES,
        free_space: FreeSpace = free_bytes,
        trust: ImageTrust | None = None,
    ) -> None:
        self.content = content
        self.layers = layers
        self.conf = conf
        self._active = active
        self._client_factory = client_factory
        self._workers = download_workers
        self._blob_locks = KeyedLocks()
        self._max_pull_bytes = max_pull_bytes  # what one pull's unpacks may write
        self._free_space = free_space
        self.trust = trust or ImageTrust.accept_all()

    def pull(
        self,
        ref: Reference,
        auth: Auth = NO_AUTH,
        deadline: Deadline | None = None,
        progress: ProgressFn | None = None,
        namespace: str = "",
    ) -> ImageRecord:
        """Pull ``ref`` for a pod of ``namespace`` ("": none); returns the saved image record.

        The signature policy is checked on the top manifest, before anything is stored.
        Raises InvalidReference, NotFound, PermissionDenied (refused or blocked),
        RegistryError, DeadlineExceeded, DigestMismatch, UnsafeContent, ProtocolError,
        ResourceExhausted (the layers would not fit in the pull's write budget),
        SignatureRefused (the trust policy refused the image), InvalidArgument (namespace).
        """
        deadline = deadline or Deadline.after(None)
        prog = _Progress(progress)
        policy = self.trust.policy_for(namespace)  # a bad namespace costs no registry call
        client, top_raw, top_type = self._resolve(ref, auth, deadline)
        top_digest = _sha256(top_raw)
        if ref.digest is not None and top_digest != ref.digest:
            raise DigestMismatch(f"{ref}: registry sent a manifest with digest {top_digest}")
        # Signatures sign the top manifest (an index's, for a multi-platform image) and the
        # reference asked for, whichever endpoint served it; nothing is stored before this.
        accepted = self.trust.check(ref, top_digest, client, policy, deadline)
        manifest_raw, manifest_type = top_raw, top_type
        manifest_digest = top_digest
        if top_type in INDEX_TYPES:
            desc = select_platform(top_raw)
            manifest_raw, ctype = client.get_manifest(desc.digest)
            manifest_digest = _sha256(manifest_raw)
            if manifest_digest != desc.digest:
                raise DigestMismatch(
                    f"{ref}: platform manifest hashes to {manifest_digest}, "
                    f"index says {desc.digest}"
                )
            manifest_type = media_type_of(manifest_raw, ctype)
        manifest = parse_manifest(manifest_raw, manifest_type)
        digests = {
            top_digest,
            manifest_digest,
            manifest.config.digest,
            *(layer.digest for layer in manifest.layers),
        }
        release = self._active(digests)
        try:
            self._store_small(top_digest, top_raw)
            self._store_small(manifest_digest, manifest_raw)
            config_raw = self._config(client, manifest.config)
            image_config = parse_config(config_raw, len(manifest.layers))
            chains = chain_ids(image_config.diff_ids)
            release_chains = self._active(set(chains))
            try:
                layer_records = self._layers(
                    client, manifest.layers, image_config.diff_ids, chains, prog, deadline
                )
            finally:
                release_chains()
            size = manifest.config.size + sum(layer.size for layer in manifest.layers)
            uid, username = user_of(image_config.config.get("User"))
            record = ImageRecord(
                id=manifest.config.digest,
                repo_tags=(ref.tagged(),) if ref.tagged() else (),  # type: ignore[arg-type]
                repo_digests=(ref.with_digest(top_digest),),
                manifest_digest=manifest_digest,
                layers=tuple(layer_records),
                size=size,
                created_ns=time.time_ns(),
                uid=uid,
                username=username,
                config=image_config.config,
                verified=(Verification.of(ref, top_digest, accepted),),
            )
            return record
        finally:
            release()
            prog.update(force=True, phase="done")

    def verify_again(
        self, ref: Reference, digest: str, policy: Policy, deadline: Deadline
    ) -> tuple[AcceptedSignature, ...]:
        """Check a stored image's signatures against ``policy`` as a pull of ``ref`` would,
        fetching them again (registry attachments from the first endpoint, anonymously:
        CreateContainer carries no pull credentials). Returns the signatures that met it.

        Raises SignatureRefused, RegistryError, DeadlineExceeded, PermissionDenied.
        """
        endpoints = self.conf.endpoints(ref)
        if not endpoints:
            raise PermissionDenied(f"{ref}: registry {ref.domain} is blocked by registries.conf")
        client = self._client_factory(endpoints[0], NO_AUTH, deadline)
        return self.trust.check(ref, digest, client, policy, deadline)

    # -- steps ----------------------------------------------------------------

    def _resolve(
        self, ref: Reference, auth: Auth, deadline: Deadline
    ) -> tuple[RegistryClient, bytes, str]:
        """Fetch the top manifest from the first endpoint that has it (mirrors first)."""
        endpoints = self.conf.endpoints(ref)
        if not endpoints:
            raise PermissionDenied(f"{ref}: registry {ref.domain} is blocked by registries.conf")
        errors: list[VmcriError] = []
        for endpoint in endpoints:
            client = self._client_factory(endpoint, auth, deadline)
            try:
                raw, ctype = client.get_manifest(ref.fetch_ref)
            except (NotFound, PermissionDenied, RegistryError) as exc:
                if endpoint.mirror:
                    log.info("mirror %s failed for %s: %s", endpoint, ref, exc.message)
                errors.append(exc)
                continue
            return client, raw, media_type_of(raw, ctype)
        last = errors[-1]
        if len(errors) > 1:
            summary = "; ".join(e.message for e in errors)
            raise type(last)(f"{ref}: every endpoint failed: {summary}") from last
        raise last

    def _store_small(self, digest: str, data: bytes) -> None:
        if not self.content.has_blob(digest, len(data)):
            self.content.put_blob(digest, data)

    def _config(self, client: RegistryClient, desc: Descriptor) -> bytes:
        if desc.size > MAX_CONFIG_BYTES:
            raise DigestMismatch(f"image config {desc.digest}: {desc.size} bytes is too large")
        if not self.content.has_blob(desc.digest, desc.size):
            self._download(client, desc, None)
        return self.content.read_blob(desc.digest, MAX_CONFIG_BYTES)

    def _download(
        self,
        client: RegistryClient,
        desc: Descriptor,
        prog: _Progress | None,
        feed: BlobFeed | None = None,
    ) -> None:
        """Fetch ``desc`` into the content store unless it is there; tell ``feed`` how it goes.

        Raises what fetch_blob raises, DigestMismatch, FeedCancelled, OSError.
        """
        try:
            with self._blob_locks.hold(desc.digest):
                if self.content.has_blob(desc.digest, desc.size):
                    if prog is not None:
                        prog.add_bytes(desc.size)
                    if feed is not None:
                        feed.committed(self.content.blob_path(desc.digest))
                    return
                if feed is not None and feed.cancelled:
                    raise FeedCancelled(f"blob {desc.digest}: pull abandoned")
                with self.content.writer(desc.digest, desc.size, feed) as writer:
                    sink = writer if prog is None else _CountingSink(writer, prog)
                    client.fetch_blob(desc.digest, sink)  # type: ignore[arg-type]
        except BaseException as exc:
            if feed is not None:
                feed.failed(exc)  # a no-op when the writer already said so
            raise

    def _layers(
        self,
        client: RegistryClient,
        descs: tuple[Descriptor, ...],
        diff_ids: tuple[str, ...],
        chains: list[str],
        prog: _Progress,
        deadline: Deadline,
    ) -> list[LayerRecord]:
        """Download the missing layers in parallel and unpack each *while* it downloads.

        Unpacks run in order on this thread (a layer is unpacked over the ones
        below it), each reading its blob through a :class:`BlobFeed` as the
        bytes arrive; downloads of later layers go on meanwhile. The layer
        store commits a layer only once its blob is verified and committed.
        All the unpacks share one write budget, checked against free space.
        """
        records = [
            LayerRecord(d.digest, d.size, d.media_type, diff_id, chain)
            for d, diff_id, chain in zip(descs, diff_ids, chains, strict=True)
        ]
        missing = [i for i, chain in enumerate(chains) if not self.layers.has(chain)]
        prog.update(
            force=True,
            phase="downloading",
            layers_total=len(descs),
            layers_done=len(descs) - len(missing),
            bytes_total=sum(descs[i].size for i in missing),
        )
        if not missing:
            return records
        budget = WriteBudget(self.layers.root, self._max_pull_bytes, self._free_space)
        feeds = {i: BlobFeed(descs[i].digest, descs[i].size) for i in missing}
        pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pull")
        try:
            futures: dict[int, Future[None]] = {
                i: pool.submit(self._download, client, descs[i], prog, feeds[i]) for i in missing
            }
            for i in missing:
                deadline.check(f"pull layer {descs[i].digest}")
                prog.update(phase="unpacking")
                parent = chains[i - 1] if i else ""
                self.layers.unpack(chains[i], parent, diff_ids[i], feeds[i], budget)
                futures[i].result()  # the blob is committed: surface any late error
                prog.update(force=True, layers_done=prog.state.layers_done + 1)
        except BaseException:
            for feed in feeds.values():
                feed.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return records


def user_of(user: object) -> tuple[int | None, str]:
    """CRI's uid/username from the image config ``User`` ("1000", "1000:1000", "nobody:x")."""
    if not isinstance(user, str) or not user:
        return None, ""
    name = user.split(":", 1)[0]
    if name.isdigit():
        return int(name), ""
    return None, name


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
