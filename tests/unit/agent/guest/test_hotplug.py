"""OnlineResources in the guest, on a sysfs tree of files: what is onlined, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.agent.convert import guest_resources
from vmcri.agent.guest.hotplug import Hotplug, HotplugPaths
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, InvalidArgument, ProtocolError


def sysfs(tmp: Path, cpus: dict[int, str | None], memory: dict[int, str]) -> HotplugPaths:
    """cpuN/online per ``cpus`` (None: no switch, as the boot CPU), memoryN/state."""
    system = tmp / "system"
    for n, state in cpus.items():
        (system / "cpu" / f"cpu{n}").mkdir(parents=True)
        if state is not None:
            (system / "cpu" / f"cpu{n}" / "online").write_text(state + "\n")
    (system / "cpu" / "cpufreq").mkdir()  # not a CPU
    for n, state in memory.items():
        (system / "memory" / f"memory{n}").mkdir(parents=True)
        (system / "memory" / f"memory{n}" / "state").write_text(state + "\n")
    (tmp / "meminfo").write_text("MemTotal:        667956 kB\nMemFree: 1 kB\n")
    return HotplugPaths(system=system, meminfo=tmp / "meminfo")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_offline_cpus_and_memory_blocks_are_onlined(tmp_path: Path) -> None:
    paths = sysfs(tmp_path, {0: None, 1: "0", 2: "1"}, {0: "online", 32: "offline"})
    hotplug = Hotplug(enabled=True, paths=paths)
    answer = hotplug.online(agent_pb2.OnlineResourcesRequest(cpus=3, wait_ms=1000))
    assert (answer.online_cpus, answer.memory_total_bytes) == (3, 667956 * 1024)
    assert (paths.system / "cpu/cpu1/online").read_text() == "1"
    assert (paths.system / "memory/memory32/state").read_text() == "online"


def test_no_more_cpus_than_asked_are_onlined(tmp_path: Path) -> None:
    # under TCG the VM's maximum is present from boot: the host says how many are the pod's
    paths = sysfs(tmp_path, {0: None, 1: "0", 2: "0", 10: "0"}, {})
    answer = Hotplug(enabled=True, paths=paths).online(
        agent_pb2.OnlineResourcesRequest(cpus=2, wait_ms=1000)
    )
    assert answer.online_cpus == 2
    states = [(paths.system / f"cpu/cpu{n}/online").read_text().strip() for n in (1, 2, 10)]
    assert states == ["1", "0", "0"]


def test_a_cpu_that_does_not_appear_in_time_is_reported_not_waited_for_forever(
    tmp_path: Path,
) -> None:
    paths = sysfs(tmp_path, {0: None}, {})
    clock = Clock()
    hotplug = Hotplug(enabled=True, paths=paths, clock=clock, sleep=clock.sleep)
    answer = hotplug.online(agent_pb2.OnlineResourcesRequest(cpus=2, wait_ms=500))
    assert answer.online_cpus == 1 and 0.5 <= clock.now < 0.6


def test_the_host_agent_onlines_nothing_and_bounds_are_checked(tmp_path: Path) -> None:
    paths = sysfs(tmp_path, {0: None, 1: "0"}, {})
    with pytest.raises(FailedPrecondition, match="runs on the host"):
        Hotplug(enabled=False, paths=paths).online(agent_pb2.OnlineResourcesRequest(cpus=2))
    assert (paths.system / "cpu/cpu1/online").read_text() == "0\n"
    with pytest.raises(InvalidArgument):
        Hotplug(enabled=True, paths=paths).online(agent_pb2.OnlineResourcesRequest(cpus=10**6))


def test_the_host_bounds_what_the_guest_answers() -> None:
    ok = guest_resources(agent_pb2.OnlineResourcesResponse(online_cpus=2, memory_total_bytes=1))
    assert ok.online_cpus == 2
    with pytest.raises(ProtocolError):
        guest_resources(agent_pb2.OnlineResourcesResponse(online_cpus=1 << 20))
