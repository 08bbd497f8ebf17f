"""Unit tests of the runc backend's pure pieces and its host wrappers, with fakes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from vmcri.errors import ConfigError, FailedPrecondition, HostCommandError, InvalidArgument
from vmcri.handlers.base import ContainerExit
from vmcri.handlers.runc.cgroups import CgroupMode, Cgroups, detect_mode
from vmcri.handlers.runc.exitfile import exit_reason, read_exit, write_exit
from vmcri.handlers.runc.host import CommandResult, Helper
from vmcri.handlers.runc.layout import Layout, check_id
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.runc.pod_files import hosts_file, resolv_conf
from vmcri.handlers.runc.rootfs import overlay_options
from vmcri.handlers.runc.runc_cli import Runc
from vmcri.model import DNSConfig, IDMapping


class FakeHost:
    """Answers commands from a table; records every call."""

    def __init__(self, answers: dict[str, CommandResult]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, input: bytes | None = None,
            capture: bool = True) -> CommandResult:  # fmt: skip
        self.calls.append(list(argv))
        return self.answers.get(argv[3], CommandResult(0, b"", b""))

    def spawn_detached(self, argv: Sequence[str], *, stderr_path: str) -> bytes:
        raise AssertionError("not used")

    def run_bounded(self, argv: Sequence[str], *, timeout: float | None, limit: int,
                    on_timeout: Callable[[], None]) -> tuple[CommandResult, bool]:  # fmt: skip
        raise AssertionError("not used")

    def start_helper(self, argv: Sequence[str], *, stderr_path: str) -> Helper:
        raise AssertionError("not used")

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None: ...
    def idmapped_mount(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        self.calls.append(["idmap", source, target, userns_path, str(recursive)])

    def set_id_maps(self, pid: int, uids: Sequence[IDMapping], gids: Sequence[IDMapping]) -> None:
        raise AssertionError("not used")

    def unmount(self, target: str) -> None: ...
    def kill(self, pid: int, sig: int) -> bool:
        return False

    def cmdline(self, pid: int) -> list[str] | None:
        return None

    def is_mounted(self, path: str) -> bool:
        return False


def test_runc_state_and_gone_containers() -> None:
    host = FakeHost({"state": CommandResult(1, b"", b"container does not exist")})
    runc = Runc(host, "runc", "/r")
    assert runc.state("x") is None
    assert host.calls == [["runc", "--root", "/r", "state", "x"]]
    host.answers["state"] = CommandResult(
        0, json.dumps({"status": "running", "pid": 5}).encode(), b""
    )
    assert runc.state("x") == {"status": "running", "pid": 5}
    host.answers["state"] = CommandResult(1, b"", b"permission denied")
    with pytest.raises(HostCommandError, match="permission denied"):
        runc.state("x")


def test_runc_kill_delete_treat_gone_as_success() -> None:
    host = FakeHost({
        "kill": CommandResult(1, b"", b"container not running"),
        "delete": CommandResult(1, b"", b"container does not exist"),
        "start": CommandResult(1, b"", b"boom"),
    })  # fmt: skip
    runc = Runc(host, "runc", "/r")
    assert runc.kill("x", "TERM") is False
    runc.delete("x")
    with pytest.raises(HostCommandError, match="boom"):
        runc.start("x")
    assert runc.exec_argv("x", "/p", ["ls"]) == [
        "runc",
        "--root",
        "/r",
        "exec",
        "--pid-file",
        "/p",
        "x",
        "ls",
    ]


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


def test_exit_file_round_trip(tmp_path: Path) -> None:
    assert read_exit(str(tmp_path)) is None
    write_exit(str(tmp_path), ContainerExit(137, 5, "OOMKilled"))
    assert read_exit(str(tmp_path)) == ContainerExit(137, 5, "OOMKilled", "")
    assert [exit_reason(0, False), exit_reason(1, False), exit_reason(137, True)] == [
        "Completed",
        "Error",
        "OOMKilled",
    ]


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cgroup_v1_usage_and_oom(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "unified/cgroup.procs": "",
        "memory/p/c/memory.usage_in_bytes": "1000\n",
        "memory/p/c/memory.stat": "total_inactive_file 300\ntotal_rss 600\n",
        "memory/p/c/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "cpuacct/p/c/cpuacct.usage": "123456\n",
        "pids/p/c/pids.current": "3\n",
    })  # fmt: skip
    cg = Cgroups(str(tmp_path))
    assert cg.mode is CgroupMode.HYBRID
    u = cg.usage("/p/c")
    assert (u.cpu_ns, u.memory_usage, u.memory_working_set, u.memory_rss, u.pids) == (
        123456,
        1000,
        700,
        600,
        3,
    )
    assert cg.oom_kills("/p/c") == 2
    assert cg.usage("/missing").memory_usage == 0


def test_cgroup_v2_usage_and_oom(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "cgroup.controllers": "cpu memory pids\n",
        "p/c/memory.current": "2000\n",
        "p/c/memory.stat": "anon 1500\ninactive_file 500\n",
        "p/c/memory.events": "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n",
        "p/c/cpu.stat": "usage_usec 7\nuser_usec 5\n",
        "p/c/pids.current": "1\n",
    })  # fmt: skip
    assert detect_mode(str(tmp_path)) is CgroupMode.V2
    cg = Cgroups(str(tmp_path))
    u = cg.usage("/p/c")
    assert (u.cpu_ns, u.memory_working_set, u.memory_rss, u.pids) == (7000, 1500, 1500, 1)
    assert cg.oom_kills("/p/c") == 1
