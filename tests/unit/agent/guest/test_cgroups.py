"""The agent's cgroup reader (v1 and v2) on fake trees, as it reads a guest's cgroups
and, for the runc handler, the host's; and /proc/meminfo."""

from __future__ import annotations

import os
from pathlib import Path

from vmcri.agent.guest.cgroups import (
    CgroupReader,
    DeviceIoStats,
    counters_message,
    read_meminfo,
)


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


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cgroup_v1_usage_and_oom(tmp_path: Path) -> None:
    """The agent's reader, which reads a host's cgroups for the runc handler too."""
    _tree(tmp_path, {
        "unified/cgroup.procs": "",
        "memory/p/c/memory.usage_in_bytes": "1000\n",
        "memory/p/c/memory.stat": "total_inactive_file 300\ntotal_rss 600\n",
        "memory/p/c/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "cpuacct/p/c/cpuacct.usage": "123456\n",
        "pids/p/c/pids.current": "3\n",
    })  # fmt: skip
    cg = CgroupReader(tmp_path)
    u = cg.stats("/p/c")
    assert (u.cpu_usage_ns, u.memory_usage_bytes, u.memory_working_set_bytes) == (123456, 1000, 700)
    assert (u.memory_rss_bytes, u.pids, u.oom_kills) == (600, 3, 2)
    assert cg.stats("/missing").memory_usage_bytes == 0


def test_cgroup_v2_usage_and_oom(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "cgroup.controllers": "cpu memory pids\n",
        "p/c/memory.current": "2000\n",
        "p/c/memory.stat": "anon 1500\ninactive_file 500\n",
        "p/c/memory.events": "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n",
        "p/c/cpu.stat": "usage_usec 7\nuser_usec 5\n",
        "p/c/pids.current": "1\n",
    })  # fmt: skip
    u = CgroupReader(tmp_path).stats("/p/c")
    assert (u.cpu_usage_ns, u.memory_working_set_bytes, u.memory_rss_bytes, u.pids) == (
        7000,
        1500,
        1500,
        1,
    )
    assert u.oom_kills == 1
