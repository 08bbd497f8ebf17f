"""Unit tests of the runc backend's pure pieces and its host wrappers, with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.agent.guest.cgroups import CgroupReader
from vmcri.errors import ConfigError, FailedPrecondition, InvalidArgument
from vmcri.handlers.runc.layout import Layout, check_id
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.runc.rootfs import overlay_options
from vmcri.host.cgroups import kill_all_in, remove_tree
from vmcri.model import DNSConfig
from vmcri.oci.pod_files import hosts_file, resolv_conf
from vmcri.supervisor.containers import EXEC_OUTPUT_LIMIT


def test_overlay_options_order_and_limits() -> None:
    assert (
        overlay_options(["/l0", "/l1"], "/u", "/w", "/e")
        == "lowerdir=/l1:/l0,upperdir=/u,workdir=/w"
    )
    assert overlay_options([], "/u", "/w", "/e").startswith("lowerdir=/e,")
    with pytest.raises(FailedPrecondition):
        overlay_options(["/a:b"], "/u", "/w", "/e")
    with pytest.raises(FailedPrecondition, match="too many layers"):
        overlay_options([f"/layers/{'x' * 60}/{i}" for i in range(100)], "/u", "/w", "/e")


def test_pod_files() -> None:
    assert resolv_conf(
        DNSConfig(servers=("10.0.0.10",), searches=("a.svc", "svc"), options=("ndots:5",))
    ) == ("nameserver 10.0.0.10\nsearch a.svc svc\noptions ndots:5\n")
    assert resolv_conf(DNSConfig()) == ""
    with pytest.raises(InvalidArgument, match=r"dns_config.servers\[0\]"):
        resolv_conf(DNSConfig(servers=("1.1.1.1 evil",)))
    assert "127.0.0.1\tlocalhost" in hosts_file("p", ("10.1.1.1",))
    assert hosts_file("p", ("10.1.1.1",)).endswith("10.1.1.1\tp\n")


def test_ids_cannot_escape_the_state_dir(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "s", tmp_path / "r")
    assert layout.container_dir("abc").parent == tmp_path / "s" / "containers"
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(InvalidArgument):
            check_id(bad, "container id")


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="cgroup_parent"):
        RuncOptions(cgroup_parent="relative")
    with pytest.raises(ConfigError, match="pids_limit"):
        RuncOptions(pids_limit=-1)


def test_exec_output_limit_default_is_what_is_kept_and_more_is_refused() -> None:
    # The agent answers ExecSync in one frame: a limit above what fits was cut silently.
    assert RuncOptions().exec_output_limit == EXEC_OUTPUT_LIMIT
    assert RuncOptions(exec_output_limit=1024).exec_output_limit == 1024
    for bad in (1023, EXEC_OUTPUT_LIMIT + 1, 16 * 1024 * 1024):
        with pytest.raises(ConfigError, match=r"options\.exec_output_limit: .*between 1024"):
            RuncOptions(exec_output_limit=bad)


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


def test_pod_cgroup_removal_and_orphan_kill_on_a_v1_tree(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "memory/vmcri/pod/c/cgroup.procs": "",
        "pids/vmcri/pod/c/cgroup.procs": "",
    })  # fmt: skip
    # No process listed: nothing to kill; a path outside the tree is refused.
    assert kill_all_in("/vmcri/pod", str(tmp_path)) == 0
    assert kill_all_in("/../etc", str(tmp_path)) == 0
    for f in tmp_path.rglob("cgroup.procs"):
        f.unlink()
    remove_tree("/vmcri/pod", str(tmp_path))
    assert not (tmp_path / "memory/vmcri/pod").exists()
    assert not (tmp_path / "pids/vmcri/pod").exists()
    assert (tmp_path / "memory/vmcri").is_dir()
