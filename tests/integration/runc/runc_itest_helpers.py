"""Helpers of the runc integration tests: records built by hand, waiting for exits.

The backend reaches records through ``BackendServices``; :data:`RECORDS` plays the
runtime here: every record :func:`container_record` makes is in it, and it keeps the
exits the pods' supervisor sends up.
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

from vmcri.errors import NotFound
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerExit


class Records:
    """A minimal ``BackendServices``: the records of one test."""

    def __init__(self) -> None:
        self.containers: dict[str, ContainerRecord] = {}
        self.exited: dict[str, ContainerExit] = {}
        self._changed = threading.Condition()

    def find_container(self, container_id: str) -> ContainerRecord | None:
        return self.containers.get(container_id)

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]

    def container_exited(self, container_id: str, exit: ContainerExit) -> None:
        with self._changed:
            self.exited[container_id] = exit
            self._changed.notify_all()

    def wait_exit(self, container_id: str, timeout: float) -> ContainerExit | None:
        with self._changed:
            self._changed.wait_for(lambda: container_id in self.exited, timeout)
            return self.exited.get(container_id)

    def find_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        return None  # the tests hand the backend its sandbox records themselves

    def update_sandbox_runtime(self, sandbox_id: str, values: Mapping[str, str]) -> SandboxRecord:
        raise NotFound(f"sandbox {sandbox_id}: the runc backend records no facts of its own")


RECORDS = Records()


def new_id() -> str:
    return secrets.token_hex(32)


def sandbox_record(config: PodConfig | None = None, **kw: object) -> SandboxRecord:
    config = config or PodConfig(metadata=Metadata(name="pod", uid=new_id(), namespace="ns"),
                                 hostname="testpod")  # fmt: skip
    return SandboxRecord(id=new_id(), handler="runc", backend="runc", config=config)


def container_record(
    sandbox: SandboxRecord, workdir: Path, name: str = "c", **kw: object
) -> ContainerRecord:
    config = ContainerConfig(metadata=Metadata(name=name), image="localhost/busybox:test", **kw)  # type: ignore[arg-type]
    record = ContainerRecord(
        id=new_id(),
        sandbox_id=sandbox.id,
        config=config,
        image_id="sha256:" + "b" * 64,
        image_name="localhost/busybox:test",
        log_path=str(workdir / "logs" / f"{name}.log"),
    )
    RECORDS.containers[record.id] = record
    return record


def wait_exit(
    be: RuncBackend, sb: SandboxRecord, c: ContainerRecord, timeout: float = 20.0
) -> ContainerExit:
    """The container's exit, waiting for the supervisor to send it up; the record kept on
    disk says the same."""
    found = RECORDS.wait_exit(c.id, timeout)
    if found is None:
        raise AssertionError(f"container {c.id} did not exit in {timeout}s")
    assert be.supervisor.recorded_exit(sb, c.id) == found
    return found


def stop(be: RuncBackend, sb: SandboxRecord, c: ContainerRecord, timeout: float) -> ContainerExit:
    """What the container service does: SIGTERM, wait up to ``timeout``, SIGKILL, wait."""
    be.supervisor.signal(sb, c, signal.SIGTERM)
    found = RECORDS.wait_exit(c.id, timeout)
    if found is not None:
        return found
    be.supervisor.signal(sb, c, signal.SIGKILL)
    return wait_exit(be, sb, c)
