"""What a VM template's agent does before the VM is saved, and the sealed runtime copy,
with the real agent and real runc on the host (the guest does the same with crun)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.conftest import AgentProcess, EventSink, make_spec
from vmcri.agent import types
from vmcri.agent.guest.warm_up import CONTAINER_ID

pytestmark = pytest.mark.integration


def _cgroups_named(name: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/{name}") if p.exists()] + [
        p for p in [Path("/sys/fs/cgroup") / name] if p.exists()
    ]


def test_warm_up_runs_a_container_and_leaves_nothing(agent: AgentProcess) -> None:
    sink = EventSink()
    client = agent.client(sink)
    for _ in range(2):  # a second warm-up finds nothing of the first in its way
        client.warm_up(timeout=60)
        assert CONTAINER_ID not in [c["id"] for c in agent.runc_list()]
        assert not (agent.scratch / CONTAINER_ID).exists()
        assert _cgroups_named(CONTAINER_ID) == []
    assert "warm-up container ran" in agent.log.read_text()
    # Nothing of it reaches a host: no event, no container in the agent's list.
    client.ping()
    assert not [e for e in sink.events if getattr(e, "container_id", "") == CONTAINER_ID]
    assert CONTAINER_ID not in [c.container_id for c in client.list_containers()]


@pytest.fixture(scope="module")
def sealed_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("sealed"), "--seal-runc")
    try:
        yield proc
    finally:
        proc.stop()


def test_a_sealed_runc_runs_containers_and_cannot_be_written(
    sealed_agent: AgentProcess, busybox_lower: Path
) -> None:
    sink = EventSink()
    client = sealed_agent.client(sink)
    spec = make_spec(["sh", "-c", "echo hi"])
    state = client.create_container("sealed", spec, lowerdirs=[str(busybox_lower)])
    # runc took the sealed copy as its own: the container's init (runc init until Start)
    # runs from the agent's memfd, not from a "runc_cloned" copy of runc's own.
    assert os.readlink(f"/proc/{state.pid}/exe").startswith("/memfd:runc (deleted)")
    client.start_container("sealed")
    exit_: types.ContainerExit = sink.wait_for(lambda: sink.exit_of("sealed"))
    assert exit_.exit_code == 0
    sink.wait_for(lambda: sink.output("sealed") == b"hi\n")
    client.remove_container("sealed")
    # The agent's copy: a memfd with every seal, which no one (root included) can write.
    memfds = [
        fd
        for fd in (Path(f"/proc/{sealed_agent.proc.pid}/fd")).iterdir()
        if os.readlink(fd).startswith("/memfd:runc")
    ]
    assert len(memfds) == 1
    with open(memfds[0], "rb") as copy:
        seals = fcntl.fcntl(copy.fileno(), fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    fd = os.open(memfds[0], os.O_RDWR)
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"\x7fELF")
    finally:
        os.close(fd)
    assert "sealed" not in [c["id"] for c in sealed_agent.runc_list()]
