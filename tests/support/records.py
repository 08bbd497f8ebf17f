"""Sandbox and container records built by hand, for tests of what keeps and reads them."""

from __future__ import annotations

from vmcri.ids import new_id
from vmcri.model import ContainerConfig, KeyValue, Metadata, Mount, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord


def sandbox(name: str = "web", attempt: int = 0) -> SandboxRecord:
    meta = Metadata(name=name, uid="uid-1", namespace="default", attempt=attempt)
    return SandboxRecord(id=new_id(), handler="vm", backend="vm", config=PodConfig(metadata=meta))


def container(sandbox_id: str, name: str = "app") -> ContainerRecord:
    config = ContainerConfig(
        metadata=Metadata(name=name),
        image="busybox",
        envs=(KeyValue("A", "1"),),
        mounts=(Mount(container_path="/data", host_path="/srv"),),
    )
    return ContainerRecord(
        id=new_id(), sandbox_id=sandbox_id, config=config, image_id="sha256:ab", image_name="x"
    )
