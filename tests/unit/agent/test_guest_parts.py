"""Guest-side pieces with fakes: event log, cgroup reader, sandbox set-up, URLs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vmcri.agent.guest.cgroups import CgroupReader, read_meminfo
from vmcri.agent.guest.events import EventLog
from vmcri.agent.guest.processes import exit_code_of
from vmcri.agent.guest.sandbox import HostSettings, Sandbox
from vmcri.agent.transport import find_virtio_port, parse_url
from vmcri.api import agent_pb2
from vmcri.errors import InvalidArgument


def _output(data: bytes) -> Callable[[agent_pb2.Event], None]:
    def fill(event: agent_pb2.Event) -> None:
        event.output.container_id = "c"
        event.output.stream = agent_pb2.OUTPUT_STREAM_STDOUT
        event.output.data = data

    return fill


def _exit(event: agent_pb2.Event) -> None:
    event.container_exited.container_id = "c"


def test_event_log_keeps_exits_and_drops_oldest_output_over_budget() -> None:
    log = EventLog(max_bytes=1000, clock=lambda: 42)
    for _ in range(5):
        log.append(_output(b"x" * 300))
    log.append(_exit)
    with log.cond:
        kept = log.since(0)
    seqs = [seq for seq, _ in kept]
    assert seqs[-1] == 6 and log.dropped >= 2
    assert agent_pb2.Event.FromString(kept[-1][1]).HasField("container_exited")
    log.ack(5)
    with log.cond:
        assert [seq for seq, _ in log.since(0)] == [6]


def test_cgroup_v2_reader(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    cg = tmp_path / "vmcri" / "c1"
    cg.mkdir(parents=True)
    (cg / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (cg / "memory.current").write_text("10000\n")
    (cg / "memory.stat").write_text("anon 4000\ninactive_file 3000\n")
    (cg / "pids.current").write_text("3\n")
    (cg / "memory.events").write_text("low 0\noom 1\noom_kill 1\n")
    stats = CgroupReader(tmp_path).stats("/vmcri/c1")
    assert (stats.cpu_usage_ns, stats.memory_usage_bytes, stats.memory_working_set_bytes) == (
        1_500_000,
        10000,
        7000,
    )
    assert (stats.memory_rss_bytes, stats.pids, stats.oom_kills) == (4000, 3, 1)


def test_cgroup_v1_reader_and_missing_cgroup(tmp_path: Path) -> None:
    for controller in ("cpuacct", "memory", "pids"):
        (tmp_path / controller / "vmcri" / "c1").mkdir(parents=True)
    (tmp_path / "cpuacct/vmcri/c1/cpuacct.usage").write_text("123\n")
    (tmp_path / "memory/vmcri/c1/memory.usage_in_bytes").write_text("5000\n")
    (tmp_path / "memory/vmcri/c1/memory.stat").write_text(
        "total_rss 100\ntotal_inactive_file 1000\n"
    )
    (tmp_path / "memory/vmcri/c1/memory.oom_control").write_text("oom_kill_disable 0\noom_kill 2\n")
    (tmp_path / "pids/vmcri/c1/pids.current").write_text("1\n")
    reader = CgroupReader(tmp_path)
    assert not reader.unified
    stats = reader.stats("/vmcri/c1")
    assert (stats.cpu_usage_ns, stats.memory_working_set_bytes, stats.oom_kills) == (123, 4000, 2)
    assert reader.stats("/vmcri/gone").memory_usage_bytes == 0


def test_meminfo(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:  100 kB\nMemAvailable: 50 kB\n")
    assert read_meminfo(tmp_path / "meminfo") == {"MemTotal": 102400, "MemAvailable": 51200}


def test_exit_codes_of_signals() -> None:
    assert exit_code_of(9) == 137  # killed by SIGKILL
    assert exit_code_of(3 << 8) == 3


class FakeMounter:
    def __init__(self) -> None:
        self.mounts: list[tuple[str, str, str, int, str]] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.mounts.append((source, target, fstype, flags, data))

    def umount(self, target: str, *, detach: bool = False) -> None:
        pass

    def is_mounted(self, target: str) -> bool:
        return any(m[1] == target for m in self.mounts)


def test_sandbox_setup_writes_files_sysctls_and_mounts(tmp_path: Path) -> None:
    names: list[str] = []
    proc_sys = tmp_path / "sys"
    (proc_sys / "net" / "ipv4").mkdir(parents=True)
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(names.append, proc_sys))
    target = str(tmp_path / "shares" / "vol")
    request = agent_pb2.SetupSandboxRequest(
        hostname="pod-a",
        hosts=b"127.0.0.1 localhost\n",
        resolv_conf=b"nameserver 10.0.0.10\n",
        sysctls={"net.ipv4.ip_forward": "1"},
        mounts=[agent_pb2.Mount9p(tag="vol0", target=target, options=["ro", "msize=262144"])],
    )
    files = sandbox.setup(request)
    sandbox.setup(request)  # repeated set-up does not mount twice
    assert Path(files.hosts_path).read_bytes() == b"127.0.0.1 localhost\n"
    assert Path(files.hostname_path).read_text() == "pod-a\n"
    assert names == ["pod-a", "pod-a"]
    assert (proc_sys / "net/ipv4/ip_forward").read_text() == "1"
    assert mounter.mounts == [
        ("vol0", target, "9p", 1, "trans=virtio,version=9p2000.L,msize=262144")
    ]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"hostname": "bad name"}, "hostname"),
        ({"sysctls": {"kernel/../x": "1"}}, "sysctl"),
        ({"hosts": b"x" * 70000}, "hosts"),
        ({"mounts": [agent_pb2.Mount9p(tag="t", target="/a/../etc")]}, "target"),
        ({"mounts": [agent_pb2.Mount9p(tag="t", target="/a", options=["a,b"])]}, "option"),
        ({"mounts": [agent_pb2.Mount9p(tag="", target="/a")]}, "tag"),
    ],
)
def test_sandbox_rejects_bad_fields_before_doing_anything(
    tmp_path: Path, request_fields: dict[str, object], field: str
) -> None:
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(lambda _: None, tmp_path))
    with pytest.raises(InvalidArgument, match=field):
        sandbox.setup(agent_pb2.SetupSandboxRequest(**request_fields))  # type: ignore[arg-type]
    assert not (tmp_path / "state").exists() and not mounter.mounts


def test_parse_urls() -> None:
    assert parse_url("unix:///run/a.sock").path == "/run/a.sock"
    vsock = parse_url("vsock://3:1024")
    assert (vsock.cid, vsock.port) == (3, 1024)
    assert parse_url("vsock://any:1024").cid == 0xFFFFFFFF
    assert parse_url("serial:///dev/vport0p1").path == "/dev/vport0p1"
    assert parse_url("serial://name:vmcri.agent").port_name == "vmcri.agent"
    for bad in ("tcp://1.2.3.4:5", "unix://relative", "vsock://x:y", "serial:///etc/passwd"):
        with pytest.raises(InvalidArgument):
            parse_url(bad)


def test_find_virtio_port_by_name(tmp_path: Path) -> None:
    for port, name in (("vport1p1", "org.qemu.guest_agent.0"), ("vport1p2", "vmcri.agent")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(name + "\n")
    assert find_virtio_port("vmcri.agent", tmp_path) == Path("/dev/vport1p2")
    with pytest.raises(InvalidArgument):
        find_virtio_port("other", tmp_path)
