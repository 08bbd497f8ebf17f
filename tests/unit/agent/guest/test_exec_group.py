"""The agent's exec groups (``vmcri/agent/guest/exec_group.py``) without root: where a
sub-cgroup goes, and the process-tree kill used where there is none (real processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.wait import wait_until
from vmcri.agent.guest.exec_group import ExecGroup, _descendants, kill_tree


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_a_group_is_a_sub_cgroup_of_the_containers(tmp_path: Path) -> None:
    (tmp_path / "vmcri" / "c1").mkdir(parents=True)
    group = ExecGroup.create(tmp_path, True, "/vmcri/c1")
    assert group is not None and group.path.parent == tmp_path / "vmcri" / "c1"
    assert group.runc_arg == group.path.name and group.runc_arg.startswith("vmcri-exec-")
    group.release()
    assert not group.path.exists()
    # cgroup v1: only the freezer hierarchy holds the exec apart.
    (tmp_path / "freezer" / "vmcri" / "c1").mkdir(parents=True)
    v1 = ExecGroup.create(tmp_path, False, "/vmcri/c1")
    assert v1 is not None and v1.path.parent == tmp_path / "freezer" / "vmcri" / "c1"
    assert v1.runc_arg == f"freezer:{v1.path.name}"
    # No container cgroup to put it in: the exec falls back to its process tree.
    assert ExecGroup.create(tmp_path, True, "/vmcri/other") is None
    assert ExecGroup.create(tmp_path, True, "") is None


def test_kill_tree_kills_the_process_and_every_descendant() -> None:
    # sh, two background sleeps and a nested shell with its own child.
    proc = subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1001 & sh -c 'sleep 1002' & wait"])
    try:
        assert wait_until(lambda: len(_descendants(proc.pid)) == 5, 10), _descendants(proc.pid)
        tree = _descendants(proc.pid)
        kill_tree(proc.pid)
        assert proc.wait(10) == -9
        # Re-parented and killed: gone, or a zombie for init to reap (dying takes a moment).
        assert wait_until(lambda: all(_state(p) in ("gone", "Z") for p in tree[1:]), 10), [
            _state(p) for p in tree
        ]
    finally:
        proc.kill()
        proc.wait()
