"""``write_checkpoint``: a valid checkpoint directory written with vmcri's own writer, as
another node would have written it, for the tests that then tamper with it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vmcri import __version__
from vmcri.checkpoint.manifest import FORMAT, Manifest, SavedContainer
from vmcri.checkpoint.paths import SUBDIR, open_directory
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.model import ContainerConfig, Metadata, PodConfig


def write_checkpoint(
    parent: Path,
    files: Mapping[str, bytes],
    handler: str = "vm",
    backend: str = "vm",
    containers: tuple[str, ...] = (),
) -> Path:
    """The checkpoint's directory (``parent``/vmcri-checkpoint)."""
    fd = open_directory(str(parent), "path")
    try:
        out = CheckpointWriter(fd, str(parent))
        for name, data in files.items():
            out.write_bytes(name, data)
        out.seal(
            Manifest(
                format=FORMAT,
                vmcri_version=__version__,
                created_at=1,
                handler=handler,
                backend=backend,
                guest_image_version="g1",
                handler_facts={},
                pod_id="a" * 64,
                pod_config=PodConfig(metadata=Metadata(name="p", uid="u", namespace="n")),
                pod_state="READY",
                network=None,
                containers=tuple(
                    SavedContainer(
                        name=name,
                        id="b" * 64,
                        config=ContainerConfig(metadata=Metadata(name=name), image="busybox"),
                        image_id="sha256:" + "c" * 64,
                        image_name="busybox",
                        state="RUNNING",
                        restart_count=0,
                    )
                    for name in containers
                ),
                files=out.files(),
            )
        )
    finally:
        os.close(fd)
    return parent / SUBDIR
