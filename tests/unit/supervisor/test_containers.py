"""SupervisedContainers' exits: each travels up once, carrying its code, reason and time;
the record on disk keeps the same account for a restarted daemon."""

from __future__ import annotations

from pathlib import Path

from vmcri.agent import types as agent_types
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import ContainerExit
from vmcri.supervisor.containers import SupervisedContainers

DOWN = "the pod VM is not running"


class Place:
    """A placement whose agent is up or not, as the test says."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.up = True

    def agent_url(self, sandbox: SandboxRecord) -> str:
        return f"unix://{self.tmp}/none.sock"

    def agent_running(self, sandbox_id: str) -> bool:
        return self.up

    def down_message(self) -> str:
        return DOWN

    def stall_hint(self, sandbox_id: str) -> str:
        return ""

    def exits_dir(self, sandbox_id: str) -> Path:
        return self.tmp / sandbox_id / "exits"

    def writable_layer(self, sandbox_id: str, container_id: str) -> Path:
        return self.tmp / container_id / "upper"


class Reports:
    """The runtime's side: records to look up, and every exit sent up, in order."""

    def __init__(self) -> None:
        self.containers: list[ContainerRecord] = []
        self.exits: list[tuple[str, ContainerExit]] = []

    def find_container(self, container_id: str) -> ContainerRecord | None:
        return next((c for c in self.containers if c.id == container_id), None)

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers if c.sandbox_id == sandbox_id]

    def container_exited(self, container_id: str, exit: ContainerExit) -> None:
        self.exits.append((container_id, exit))


def _pod(reports: Reports, containers: int) -> tuple[SandboxRecord, list[ContainerRecord]]:
    sandbox = SandboxRecord(
        id=new_id(), handler="vm", backend="vm", config=PodConfig(metadata=Metadata(name="p"))
    )
    made = [
        ContainerRecord(
            id=new_id(),
            sandbox_id=sandbox.id,
            config=ContainerConfig(metadata=Metadata(name=f"c{i}"), image="busybox"),
            image_id="sha256:1",
            image_name="busybox",
        )
        for i in range(containers)
    ]
    reports.containers.extend(made)
    return sandbox, made


def test_a_gone_agents_containers_exits_travel_up_once_each(tmp_path: Path) -> None:
    place, reports = Place(tmp_path), Reports()
    supervisor = SupervisedContainers(place, reports)
    sandbox, (first, second) = _pod(reports, 2)
    assert supervisor.liveness(sandbox, first).running
    assert reports.exits == []

    place.up = False
    assert not supervisor.liveness(sandbox, first).running
    assert [cid for cid, _ in reports.exits] == [first.id, second.id]
    for _, exit in reports.exits:
        assert (exit.exit_code, exit.reason, exit.message) == (137, "Error", DOWN)
        assert exit.finished_at > 0
    # Asked again (the reaper, a stop): nothing is sent up twice.
    assert not supervisor.liveness(sandbox, second).running
    assert len(reports.exits) == 2
    # The record on disk, for a restarted daemon, holds the same account.
    assert supervisor.recorded_exit(sandbox, first.id) == reports.exits[0][1]


def test_an_agents_exit_event_travels_up_with_its_code_reason_and_time(tmp_path: Path) -> None:
    reports = Reports()
    supervisor = SupervisedContainers(Place(tmp_path), reports)
    sandbox, (oom, done) = _pod(reports, 2)
    supervisor._on_exit(sandbox.id, agent_types.ContainerExit(1, oom.id, 0, True, 1234))
    supervisor._on_exit(sandbox.id, agent_types.ContainerExit(2, done.id, 0, False, 5678))
    # A replayed event (the agent resends what it kept after a reconnect) is not sent again.
    supervisor._on_exit(sandbox.id, agent_types.ContainerExit(2, done.id, 0, False, 5678))
    assert reports.exits == [
        (oom.id, ContainerExit(137, 1234, "OOMKilled")),
        (done.id, ContainerExit(0, 5678, "Completed")),
    ]
    assert supervisor.recorded_exit(sandbox, done.id) == ContainerExit(0, 5678, "Completed")
