"""Guest-side pieces with fakes: event log, cgroup reader, sandbox set-up, URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vmcri.agent import convert
from vmcri.agent.convert import usage_counters
from vmcri.agent.guest.cgroups import (
    CgroupReader,
    DeviceIoStats,
    counters_message,
    read_meminfo,
)
from vmcri.agent.guest.events import EventLog
from vmcri.agent.guest.processes import exit_code_of
from vmcri.agent.guest.sandbox import HostSettings, Sandbox
from vmcri.agent.transport import find_virtio_port, parse_url
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, InvalidArgument, ProtocolError
from vmcri.usage import DeviceIo


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


def test_cgroup_v2_reader_counters_for_cri_metrics(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids io\n")
    cg = tmp_path / "vmcri" / "c1"
    (cg / "vmcri-exec-1").mkdir(parents=True)  # an exec's group: its processes count too
    (cg / "cpu.stat").write_text(
        "usage_usec 9\nuser_usec 5\nsystem_usec 4\nnr_periods 8\nnr_throttled 2\nthrottled_usec 7\n"
    )
    (cg / "memory.stat").write_text(
        "anon 1\nfile 20\nfile_mapped 3\nkernel 40\npgfault 11\npgmajfault 2\n"
    )
    (cg / "memory.peak").write_text("700\n")
    (cg / "memory.swap.current").write_text("0\n")
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 6\noom 0\noom_kill 1\n")
    (cg / "pids.max").write_text("max\n")
    (cg / "io.stat").write_text(
        "253:0 rbytes=4096 wbytes=512 rios=3 wios=1 dbytes=0 dios=0\n"
        "999:9 rbytes=1 wbytes=2 rios=3 wios=4\n"
    )
    (cg / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (cg / "vmcri-exec-1" / "cgroup.procs").write_text("999999999\n")  # gone meanwhile
    s = CgroupReader(tmp_path).stats("/vmcri/c1")
    assert (s.cpu_user_ns, s.cpu_system_ns) == (5000, 4000)
    assert (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns) == (8, 2, 7000)
    assert (s.memory_cache_bytes, s.memory_mapped_file_bytes, s.memory_kernel_bytes) == (20, 3, 40)
    assert (s.memory_max_usage_bytes, s.memory_failcnt, s.threads_max) == (700, 6, 0)
    assert (s.pgfault, s.pgmajfault, s.pgfault_hierarchy) == (11, 2, 11)
    assert s.io[1] == DeviceIoStats("999:9", 1, 2, 3, 4, major=999, minor=9)  # no such device
    assert (s.io[0].major, s.io[0].minor) == (253, 0)
    assert (s.io[0].read_bytes, s.io[0].reads, s.io[0].writes) == (4096, 3, 1)
    # This very process: at least one thread and its open files (the counting is real).
    assert s.processes.processes == 1 and s.processes.threads >= 1
    assert s.processes.file_descriptors >= 3
    message = counters_message(s)
    assert (message.oom_events, message.threads_max, len(message.io)) == (1, 0, 2)


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
    (tmp_path / "cpuacct/vmcri/c1/cpuacct.stat").write_text("user 3\nsystem 1\n")
    (tmp_path / "memory/vmcri/c1/memory.max_usage_in_bytes").write_text("9000\n")
    (tmp_path / "memory/vmcri/c1/memory.failcnt").write_text("4\n")
    (tmp_path / "pids/vmcri/c1/pids.max").write_text("100\n")
    blkio = tmp_path / "blkio/vmcri/c1"
    blkio.mkdir(parents=True)
    (blkio / "blkio.throttle.io_service_bytes_recursive").write_text(
        "7:3 Read 8192\n7:3 Write 4096\n7:3 Total 12288\nTotal 12288\n"
    )
    (blkio / "blkio.throttle.io_serviced_recursive").write_text("7:3 Read 2\n7:3 Write 1\n")
    stats = reader.stats("/vmcri/c1")
    assert (stats.cpu_usage_ns, stats.memory_working_set_bytes, stats.oom_kills) == (123, 4000, 2)
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert (stats.cpu_user_ns, stats.cpu_system_ns) == (3 * tick_ns, tick_ns)
    assert (stats.memory_max_usage_bytes, stats.memory_failcnt, stats.threads_max) == (9000, 4, 100)
    [io] = stats.io
    assert (io.read_bytes, io.write_bytes, io.reads, io.writes) == (8192, 4096, 2, 1)
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

    def load(self) -> None:
        pass


def test_sandbox_setup_writes_files_sysctls_and_mounts(tmp_path: Path) -> None:
    names: list[str] = []
    proc_sys = tmp_path / "sys"
    (proc_sys / "net" / "ipv4").mkdir(parents=True)
    for scope in ("all", "default", "eth0"):
        (proc_sys / "net" / "ipv6" / "conf" / scope).mkdir(parents=True)
        (proc_sys / "net" / "ipv6" / "conf" / scope / "accept_ra").write_text("1")
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(names.append, proc_sys))
    target = str(tmp_path / "shares" / "vol")
    request = agent_pb2.SetupSandboxRequest(
        hostname="pod-a",
        hosts=b"127.0.0.1 localhost\n",
        resolv_conf=b"nameserver 10.0.0.10\n",
        sysctls={"net.ipv4.ip_forward": "1", "net.ipv6.conf.eth0.accept_ra": "1"},
        mounts=[agent_pb2.Mount9p(tag="vol0", target=target, options=["ro", "msize=262144"])],
    )
    files = sandbox.setup(request)
    sandbox.setup(request)  # repeated set-up does not mount twice
    assert Path(files.hosts_path).read_bytes() == b"127.0.0.1 localhost\n"
    assert Path(files.hostname_path).read_text() == "pod-a\n"
    assert names == ["pod-a", "pod-a"]
    assert (proc_sys / "net/ipv4/ip_forward").read_text() == "1"
    # No router advertisements: all, default (a NIC hotplugged later) and the NICs there;
    # the pod's own sysctls come after and win.
    conf = proc_sys / "net/ipv6/conf"
    assert {d.name: (d / "accept_ra").read_text() for d in conf.iterdir()} == {
        "all": "0",
        "default": "0",
        "eth0": "1",
    }
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


def test_a_shared_pid_namespace_is_made_by_the_sandbox_set_up_and_named_in_its_answer(
    tmp_path: Path,
) -> None:
    made: list[str] = []

    def pod_pid() -> str:
        made.append("pid")
        return "/run/vmcri/sandbox/pid"

    settings = HostSettings(lambda _: None, tmp_path)
    sandbox = Sandbox(tmp_path / "state", FakeMounter(), settings, pod_pid=pod_pid)
    assert sandbox.setup(agent_pb2.SetupSandboxRequest()).pid_ns_path == ""
    assert made == []
    files = sandbox.setup(agent_pb2.SetupSandboxRequest(share_pid=True))
    assert files.pid_ns_path == "/run/vmcri/sandbox/pid" and made == ["pid"]
    assert convert.sandbox_files(files).pid_ns_path == "/run/vmcri/sandbox/pid"


def test_an_agent_that_cannot_make_a_pid_namespace_refuses_before_doing_anything(
    tmp_path: Path,
) -> None:
    sandbox = Sandbox(tmp_path / "state", FakeMounter(), HostSettings(lambda _: None, tmp_path))
    with pytest.raises(FailedPrecondition, match="share_pid"):
        sandbox.setup(agent_pb2.SetupSandboxRequest(hostname="a", share_pid=True))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("path", ["relative/pid", "/run/../etc/pid", "/run/\0pid", "/" * 5000])
def test_the_host_refuses_a_bad_pid_namespace_path_from_the_agent(path: str) -> None:
    answer = agent_pb2.SetupSandboxResponse(
        hostname_path="/a", hosts_path="/b", resolv_conf_path="/c", pid_ns_path=path
    )
    with pytest.raises(ProtocolError, match="sandbox file path"):
        convert.sandbox_files(answer)


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


def test_the_host_bounds_the_counters_a_guest_sends() -> None:
    good = agent_pb2.UsageCounters(
        cpu_user_ns=5,
        sockets=2,
        oom_events=1,
        io=[agent_pb2.DeviceIo(device="vda", reads=3, major=253, minor=16)],
    )
    got = usage_counters(good)
    assert (got.cpu_user_ns, got.sockets, got.oom_events) == (5, 2, 1)
    assert got.io == (DeviceIo("vda", reads=3, major=253, minor=16),)
    for bad in (
        agent_pb2.UsageCounters(threads=1 << 63),  # beyond int64: a lie
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="../../etc")]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", major=1 << 12)]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", minor=1 << 20)]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="d")] * 65),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", writes=1 << 63)]),
    ):
        with pytest.raises(ProtocolError):
            usage_counters(bad)


HUNG_CREATE = """
import os, sys
from pathlib import Path
from vmcri.agent.guest import runc
from vmcri.agent.guest.processes import Reaper
from vmcri.errors import HostCommandError
tmp = Path(sys.argv[1])
runc.COMMAND_TIMEOUT_S = 0.3
reaper = Reaper()
reaper.start()
runtime = runc.Runc(reaper, binary=str(tmp / "hung-runtime"), root=tmp / "root")
null = os.open(os.devnull, os.O_RDWR)
try:
    runtime.create("c1", tmp, pid_file=tmp / "pid", log=tmp / "log",
                   stdin=null, stdout=null, stderr=null)
except HostCommandError as exc:
    print(exc.message)
"""


def test_a_runtime_create_that_hangs_is_killed_and_named(tmp_path: Path) -> None:
    # In a process of its own: the agent's reaper waits for every child of its process
    hung = tmp_path / "hung-runtime"
    hung.write_text("#!/bin/sh\nexec sleep 1000\n")
    hung.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-c", HUNG_CREATE, str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.startswith("runc create c1 did not finish within 0.3 s"), result
