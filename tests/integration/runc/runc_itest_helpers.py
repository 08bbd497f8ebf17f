"""Helpers of the runc integration tests: records built by hand, waiting for exits."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from vmcri.handlers.base import ContainerExit
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord


def new_id() -> str:
    return uuid.uuid4().hex


def sandbox_record(config: PodConfig | None = None, **kw: object) -> SandboxRecord:
    config = config or PodConfig(metadata=Metadata(name="pod", uid=new_id(), namespace="ns"),
                                 hostname="testpod")  # fmt: skip
    return SandboxRecord(id=new_id(), handler="runc", backend="runc", config=config)


def container_record(
    sandbox: SandboxRecord, workdir: Path, name: str = "c", **kw: object
) -> ContainerRecord:
    config = ContainerConfig(metadata=Metadata(name=name), image="localhost/busybox:test", **kw)  # type: ignore[arg-type]
    return ContainerRecord(
        id=new_id(),
        sandbox_id=sandbox.id,
        config=config,
        image_id="sha256:" + "b" * 64,
        image_name="localhost/busybox:test",
        log_path=str(workdir / "logs" / f"{name}.log"),
    )


def wait_exit(
    be: RuncBackend, sb: SandboxRecord, c: ContainerRecord, timeout: float = 20.0
) -> ContainerExit:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = be.container_liveness(sb, c)
        if live.exit is not None:
            return live.exit
        time.sleep(0.05)
    raise AssertionError(f"container {c.id} did not exit in {timeout}s")
