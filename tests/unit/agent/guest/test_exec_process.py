"""The process an exec runs (``vmcri/agent/guest/exec_process.py``): the container's own
with another command, terminal and console size; the command line that hands it over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmcri.agent.guest.exec_process import exec_process, merge_env, oom_score_adj
from vmcri.agent.guest.execs import process_file
from vmcri.agent.guest.processes import Reaper
from vmcri.agent.guest.runc import Runc
from vmcri.errors import HostCommandError

CAPS = ["CAP_CHOWN", "CAP_KILL"]
CONTAINER: dict[str, object] = {
    "terminal": False,
    "user": {"uid": 1001, "gid": 1001, "additionalGids": [1001, 1234], "umask": 18},
    "args": ["sleep", "3600"],
    "env": ["PATH=/bin", "TERM=dumb", "FOO=container"],
    "cwd": "/work",
    "capabilities": {
        "bounding": CAPS,
        "effective": CAPS,
        "permitted": CAPS,
        "inheritable": [],
        "ambient": ["CAP_KILL"],
    },
    "noNewPrivileges": True,
    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 555, "hard": 777}],
    "apparmorProfile": "cri-default",
    "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
    "oomScoreAdj": 123,
}


def test_an_exec_keeps_everything_of_the_containers_process_but_its_command() -> None:
    process = exec_process(CONTAINER, ["id", "-G"], tty=False)
    assert process["args"] == ["id", "-G"]
    assert process["terminal"] is False
    assert "consoleSize" not in process
    changed = {"args"}
    for key in CONTAINER.keys() - changed:
        assert process[key] == CONTAINER[key], key


@pytest.mark.parametrize(
    "field",
    ["user", "capabilities", "noNewPrivileges", "rlimits", "apparmorProfile", "selinuxLabel",
     "oomScoreAdj", "cwd", "env"],
)  # fmt: skip
def test_each_identity_and_confinement_field_is_the_containers(field: str) -> None:
    assert exec_process(CONTAINER, ["true"], tty=False)[field] == CONTAINER[field]


def test_a_tty_exec_gets_its_size_and_term_on_top_of_the_containers_env() -> None:
    process = exec_process(CONTAINER, ["sh"], tty=True, rows=33, cols=111)
    assert process["terminal"] is True
    assert process["consoleSize"] == {"height": 33, "width": 111}
    # TERM replaces the container's in place; the rest of its environment stays.
    assert process["env"] == ["PATH=/bin", "TERM=xterm", "FOO=container"]
    assert process["user"] == CONTAINER["user"]


def test_a_tty_exec_without_a_size_or_with_one_no_winsize_holds_has_none() -> None:
    assert "consoleSize" not in exec_process(CONTAINER, ["sh"], tty=True)
    assert "consoleSize" not in exec_process(CONTAINER, ["sh"], tty=True, rows=70000, cols=80)
    assert "consoleSize" not in exec_process(CONTAINER, ["sh"], tty=False, rows=33, cols=111)


def test_a_console_size_or_terminal_of_the_container_is_not_the_execs() -> None:
    tty_container = {**CONTAINER, "terminal": True, "consoleSize": {"height": 5, "width": 5}}
    process = exec_process(tty_container, ["true"], tty=False)
    assert process["terminal"] is False and "consoleSize" not in process


def test_the_derivation_does_not_change_the_containers_process() -> None:
    before = json.dumps(CONTAINER, sort_keys=True)
    process = exec_process(CONTAINER, ["sh"], tty=True, rows=1, cols=1)
    assert isinstance(process["env"], list)
    process["env"].append("X=1")
    assert json.dumps(CONTAINER, sort_keys=True) == before


def test_a_tty_exec_in_a_container_without_env_gets_term_only() -> None:
    bare = {k: v for k, v in CONTAINER.items() if k != "env"}
    assert exec_process(bare, ["sh"], tty=True)["env"] == ["TERM=xterm"]
    assert exec_process(bare, ["sh"], tty=False)["env"] == []


def test_merge_env_replaces_in_place_and_appends_new_names() -> None:
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4", "A="]) == ["A=", "B=3", "C=4"]
    assert merge_env([], ["TERM=xterm"]) == ["TERM=xterm"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(123, 123), (-1000, -1000), (1000, 1000), (1001, None), (None, None), (True, None),
     ("5", None)],
)  # fmt: skip
def test_oom_score_adj_is_a_kernel_value_or_none(value: object, expected: int | None) -> None:
    process = {} if value is None else {"oomScoreAdj": value}
    assert oom_score_adj(process) == expected


def test_the_runtime_takes_the_process_file_and_runs_under_the_containers_oom_score() -> None:
    runc = Runc(Reaper(), binary="crun", root=Path("/run/r"))
    argv = runc.exec_argv(
        "c1",
        process_file=Path("/b/execs/e.json"),
        pid_file=Path("/b/execs/e.pid"),
        console_socket=Path("/s/t.tty"),
        cgroup="vmcri-exec-1",
        oom_score_adj=-5,
    )
    assert argv[:4] == ["choom", "-n", "-5", "--"]
    runtime = argv[4:]
    assert runtime[:3] == ["crun", "--root", "/run/r"]
    assert runtime[-1] == "c1"  # no command after the id: the file has the args
    options = runtime[3:-1]
    assert options[0] == "exec" and "--detach" in options
    assert options[options.index("--process") + 1] == "/b/execs/e.json"
    assert options[options.index("--console-socket") + 1] == "/s/t.tty"
    assert options[options.index("--cgroup") + 1] == "vmcri-exec-1"
    assert "--tty" not in options  # the file's terminal decides
    plain = runc.exec_argv("c1", process_file=Path("/p.json"), pid_file=Path("/p.pid"))
    assert plain[0] == "crun"


def test_the_process_file_is_new_private_and_gone_after_the_start(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    with process_file(path, exec_process(CONTAINER, ["id"], tty=False)) as written:
        assert written == path
        assert json.loads(path.read_text())["args"] == ["id"]
        assert path.stat().st_mode & 0o777 == 0o600
    assert not path.exists()


def test_the_process_file_never_follows_or_overwrites_a_name_that_exists(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    for path in (link, target):
        with pytest.raises(HostCommandError), process_file(path, CONTAINER):
            pass
    assert target.read_text() == "keep"
