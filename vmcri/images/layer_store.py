"""Unpacked layers, one directory per chain ID, shared by every image using them.

The chain ID (OCI image spec, "Layer ChainID") names a layer *together with
everything below it*, which is what an unpacked, overlay-ready directory
depends on (whiteouts and symlink resolution refer to the lower layers)::

    ChainID(L0)      = DiffID(L0)
    ChainID(L0..Ln)  = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))

``layers/<chain-hex>/diff`` appears by rename only when complete, followed by
``meta.json``; a directory without ``meta.json`` is unfinished and is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmcri.images.blob_feed import BlobFeed
from vmcri.images.content_store import hex_of, pid_alive
from vmcri.images.unpack import DEFAULT_LIMITS, UnpackLimits, unpack_layer
from vmcri.images.write_budget import WriteBudget
from vmcri.store.atomic import fsync_dir, write_atomic


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class LayerMeta:
    chain_id: str
    diff_id: str
    parent: str  # chain ID below, "" for the base layer
    size: int
    entries: int


class KeyedLocks:
    """One lock per key (a digest), so equal work is done once, unequal in parallel."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class LayerStore:
    def __init__(self, images_root: Path, limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self.root = images_root / "layers"
        # Private: layers hold setuid binaries a local user must not reach (CVE-2021-41091).
        # Who reads them through a pod's share (QEMU's 9p server, virtiofsd) runs as root.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)  # also when an older vmcri made it traversable
        self.limits = limits
        self.locks = KeyedLocks()

    def dir(self, chain_id: str) -> Path:
        return self.root / hex_of(chain_id)

    def diff_dir(self, chain_id: str) -> Path:
        return self.dir(chain_id) / "diff"

    def has(self, chain_id: str) -> bool:
        return (self.dir(chain_id) / "meta.json").is_file()

    def meta(self, chain_id: str) -> LayerMeta | None:
        try:
            return LayerMeta(**json.loads((self.dir(chain_id) / "meta.json").read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def unpack(
        self,
        chain_id: str,
        parent: str,
        diff_id: str,
        blob: Path | BlobFeed,
        budget: WriteBudget | None = None,
    ) -> LayerMeta:
        """Unpack ``blob`` as layer ``chain_id`` over ``parent`` unless already there.

        ``blob`` is a committed blob file, or a :class:`BlobFeed` still being
        downloaded: the unpack then follows the download, and the layer is
        renamed into place only after the blob is verified and committed. On
        failure the feed is cancelled, so its download stops. What the unpack
        writes is charged to the pull's ``budget``; errors name the layer by
        its blob digest when ``blob`` is a feed.
        Raises UnsafeContent, ResourceExhausted, DigestMismatch (nothing is left
        behind), OSError,
        and whatever a feed's download raised (RegistryError, DeadlineExceeded...).
        """
        with self.locks.hold(chain_id):
            meta = self.meta(chain_id)
            if meta is not None:
                return meta
            lowers = []
            cur = parent
            while cur:
                lowers.append(self.diff_dir(cur))
                pm = self.meta(cur)
                if pm is None:
                    raise FileNotFoundError(f"parent layer {cur} is not unpacked")
                cur = pm.parent
            tmp = self.root / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
            tmp.mkdir(mode=0o755)
            try:
                (tmp / "diff").mkdir(mode=0o755)
                if isinstance(blob, BlobFeed):
                    with blob.reader() as reader:
                        result = unpack_layer(
                            reader,
                            tmp / "diff",
                            lowers,
                            diff_id,
                            self.limits,
                            budget=budget,
                            label=blob.digest,
                        )
                    blob.wait_committed()
                else:
                    with open(blob, "rb") as f:
                        result = unpack_layer(
                            f, tmp / "diff", lowers, diff_id, self.limits, budget=budget
                        )
                meta = LayerMeta(chain_id, diff_id, parent, result.size, result.entries)
                write_atomic(tmp / "meta.json", json.dumps(meta.__dict__).encode(), 0o644)
                final = self.dir(chain_id)
                if final.exists():  # an unfinished leftover (no meta.json): redo it
                    _rmtree(final)
                os.rename(tmp, final)
                fsync_dir(self.root)
                return meta
            except BaseException:
                if isinstance(blob, BlobFeed):
                    blob.cancel()
                _rmtree(tmp)
                raise

    def chain_dirs(self) -> set[str]:
        return {"sha256:" + p.name for p in self.root.iterdir() if len(p.name) == 64}

    def remove(self, chain_id: str) -> None:
        """Remove a layer directory; gone already is fine."""
        path = self.dir(chain_id)
        if not path.exists():
            return
        # Rename first so a crash mid-delete never leaves a half layer under its name.
        trash = self.root / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            _rmtree(trash)

    def sweep(self) -> int:
        """Delete unfinished unpacks of dead processes; returns how many."""
        n = 0
        for p in self.root.iterdir():
            if not p.name.startswith(".tmp-"):
                continue
            pid = p.name.split("-")[1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            _rmtree(p)
            n += 1
        return n


def _rmtree(path: Path) -> None:
    """Remove a tree that may hold read-only dirs (root bypasses that; others chmod)."""

    def onerror(func: object, p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    shutil.rmtree(path, onerror=onerror)
