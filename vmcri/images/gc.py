"""Garbage collection of blobs and layer directories no image references.

Safe against a concurrent pull in the same process: the referenced set is taken
under the content store lock, and it includes everything pulls in flight have
announced (``active``) *before* they look for existing blobs or layers. A pull
therefore either sees a blob deleted and downloads it again, or has announced
it and GC keeps it. Blobs and layers are only ever added complete (rename), so
GC never deletes a half-written one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vmcri.images.content_store import ContentStore
from vmcri.images.layer_store import LayerStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcResult:
    blobs_removed: int
    layers_removed: int


def collect_garbage(
    content: ContentStore, layers: LayerStore, active: Callable[[], set[str]]
) -> GcResult:
    """Delete unreferenced blobs and layers. Raises StateCorrupt for unreadable records."""
    with content.lock:
        keep: set[str] = set(active())
        for record in content.all():
            keep.add(record.id)
            keep.add(record.manifest_digest)
            keep.update(d.rsplit("@", 1)[1] for d in record.repo_digests)
            for layer in record.layers:
                keep.add(layer.digest)
                keep.add(layer.chain_id)
        blobs = [d for d in content.blob_digests() if d not in keep]
        chains = [c for c in layers.chain_dirs() if c not in keep]
        for digest in blobs:
            content.remove_blob(digest)
        for chain in chains:
            layers.remove(chain)
    if blobs or chains:
        log.info("image gc removed %d blobs and %d layers", len(blobs), len(chains))
    return GcResult(len(blobs), len(chains))
