"""The image service's domain API: what the CRI ImageService and the CLI call.

Images are found by ID (config digest, with or without ``sha256:``, or a unique
hex prefix), by repo tag (``busybox`` = ``docker.io/library/busybox:latest``) or
by repo digest (``name@sha256:...``). The same image pulled under several names
or from several registries is one record with all its tags and digests.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vmcri.errors import FailedPrecondition, InvalidReference, NotFound
from vmcri.images.auth import NO_AUTH, Auth, Deadline
from vmcri.images.content_store import ContentStore, ImageRecord
from vmcri.images.gc import GcResult, collect_garbage
from vmcri.images.layer_store import LayerStore
from vmcri.images.pull import ClientFactory, ProgressFn, Puller, _default_client
from vmcri.images.reference import parse_reference
from vmcri.images.registries_conf import load_registries_conf
from vmcri.images.trust import evidence
from vmcri.images.trust.admission import Admission
from vmcri.images.trust.verifier import ImageTrust
from vmcri.images.unpack import DEFAULT_LIMITS, UnpackLimits
from vmcri.metrics import families as metrics
from vmcri.model import ImageInfo

log = logging.getLogger(__name__)

_HEX = re.compile(r"^(?:sha256:)?([0-9a-f]{4,64})$")


@dataclass(frozen=True)
class FsUsage:
    mountpoint: str
    used_bytes: int
    inodes_used: int


def _nobody_uses() -> set[str]:
    return set()


class ImageService:
    """Pull, list, inspect and remove images under ``<root>/images``.

    Raises ConfigError at construction for a bad registries.conf.
    """

    def __init__(
        self,
        root: Path,
        registries_conf: Path,
        in_use: Callable[[], set[str]] = _nobody_uses,
        *,
        client_factory: ClientFactory = _default_client,
        limits: UnpackLimits = DEFAULT_LIMITS,
        download_workers: int = 3,
        trust: ImageTrust | None = None,
    ) -> None:
        self.images_root = root / "images"
        self.images_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.images_root.chmod(0o700)
        self.content = ContentStore(self.images_root)
        self.layers = LayerStore(self.images_root, limits)
        self._in_use = in_use
        self._active: Counter[str] = Counter()
        swept = self.content.sweep_ingest() + self.layers.sweep()
        if swept:
            log.info("removed %d unfinished downloads or unpacks of a previous run", swept)
        self._puller = Puller(
            self.content,
            self.layers,
            load_registries_conf(registries_conf),
            self._hold_active,
            client_factory,
            download_workers,
            trust=trust,
        )
        self._pull_lock = threading.Lock()
        self._admission = Admission(
            trust or self._puller.trust, self._puller.verify_again, self.content.update
        )

    # -- pull -----------------------------------------------------------------

    def pull(
        self,
        ref: str,
        auth: Auth = NO_AUTH,
        deadline: Deadline | None = None,
        progress: ProgressFn | None = None,
        namespace: str = "",
    ) -> str:
        """Pull ``ref`` for a pod of ``namespace`` ("": none) and return its image ID.

        Raises InvalidReference, NotFound, PermissionDenied, RegistryError,
        DeadlineExceeded, DigestMismatch, UnsafeContent, ProtocolError, ResourceExhausted,
        SignatureRefused (the namespace's or the node's signature policy refused it).
        """
        reference = parse_reference(ref)
        with metrics.timed_image_pull():
            record = self._puller.pull(reference, auth, deadline, progress, namespace)
        with self.content.lock:
            self._merge(record)
        return record.id

    def _merge(self, new: ImageRecord) -> None:
        """Save ``new``, keeping the names it already had; a tag moves to the new image."""
        for other in self.content.all():
            if other.id == new.id:
                continue
            tags = tuple(t for t in other.repo_tags if t not in new.repo_tags)
            if tags != other.repo_tags:
                self.content.save(replace(other, repo_tags=tags))
        old = self.content.load(new.id)
        if old is not None:
            new = replace(
                new,
                repo_tags=_union(old.repo_tags, new.repo_tags),
                repo_digests=_union(old.repo_digests, new.repo_digests),
                created_ns=old.created_ns,
                pinned=old.pinned,
                verified=evidence.merge(old.verified, new.verified),
            )
        self.content.save(new)

    def _hold_active(self, keys: set[str]) -> Callable[[], None]:
        """Mark digests/chains as used by a pull in flight, so GC keeps them."""
        with self.content.lock:
            self._active.update(keys)

        def release() -> None:
            with self.content.lock:
                self._active.subtract(keys)
                for key in keys:
                    if self._active[key] <= 0:
                        del self._active[key]

        return release

    @property
    def trust(self) -> ImageTrust:
        """The signature policy pulls are checked against."""
        return self._puller.trust

    # -- queries --------------------------------------------------------------

    def list(self, ref_filter: str = "") -> list[ImageRecord]:
        """All images, or the one ``ref_filter`` names (empty list if none).

        Raises InvalidReference for a filter that is neither an ID nor a reference.
        """
        if ref_filter:
            found = self.status(ref_filter)
            return [found] if found else []
        return self.content.all()

    def status(self, ref: str) -> ImageRecord | None:
        """The image ``ref`` names, or None. Raises InvalidReference, StateCorrupt."""
        records = self.content.all()
        match = _HEX.match(ref)
        if match and len(match.group(1)) == 64:
            image_id = "sha256:" + match.group(1)
            for r in records:
                if r.id == image_id:
                    return r
        try:
            reference = parse_reference(ref)
        except InvalidReference:
            if not match:
                raise
            reference = None
        if reference is not None:
            for r in records:
                if reference.digest is not None:
                    if reference.with_digest(reference.digest) in r.repo_digests:
                        return r
                elif reference.tagged() in r.repo_tags:
                    return r
        if match and len(match.group(1)) < 64:
            prefix = "sha256:" + match.group(1)
            hits = [r for r in records if r.id.startswith(prefix)]
            if len(hits) == 1:
                return hits[0]
        return None

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        """What a sandbox backend needs to build a container's rootfs, for a pod of
        ``namespace`` ("": the node's policy) whose signature policy must accept it.

        Raises NotFound when the image (or one of its layers) is not in the store,
        SignatureRefused (FAILED_PRECONDITION) when the policy in force for
        ``namespace`` does not accept it.
        """
        record = self.status(ref)
        if record is None:
            raise NotFound(f"image {ref!r} is not pulled")
        self._admission.admit(record, ref, namespace)
        dirs = []
        for layer in record.layers:
            if not self.layers.has(layer.chain_id):
                raise NotFound(f"image {ref!r}: layer {layer.chain_id} is missing; pull it again")
            dirs.append(str(self.layers.diff_dir(layer.chain_id)))
        name = (record.repo_tags or record.repo_digests or (record.id,))[0]
        return ImageInfo(id=record.id, name=name, layer_dirs=tuple(dirs), config=record.config)

    # -- removal and GC -------------------------------------------------------

    def remove(self, ref: str) -> None:
        """Remove the image ``ref`` names, with all its tags; unknown images are fine.

        Raises FailedPrecondition while a container uses the image, InvalidReference.
        """
        with self.content.lock:
            record = self.status(ref)
            if record is None:
                return  # CRI: RemoveImage of an absent image must succeed
            if record.id in self._in_use():
                raise FailedPrecondition(f"image {ref!r} ({record.id}) is in use by a container")
            self.content.delete(record.id)
        self.gc()

    def gc(self) -> GcResult:
        """Remove blobs and layers no image or pull in flight references."""
        return collect_garbage(self.content, self.layers, lambda: set(self._active))

    def fs_info(self) -> FsUsage:
        """Bytes and inodes used under the image root (hard links counted once)."""
        seen: set[tuple[int, int]] = set()
        used = 0
        for dirpath, dirnames, filenames in os.walk(self.images_root):
            for name in (*dirnames, *filenames):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                used += st.st_blocks * 512
        return FsUsage(str(self.images_root), used, len(seen))


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))
