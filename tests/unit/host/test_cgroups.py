"""The pod cgroup both handlers use: its path per cgroup driver, and what is made where."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cgroups import hybrid_root, v2_root
from vmcri.errors import InvalidArgument
from vmcri.host import cgroups
from vmcri.host.cgroups import PodCgroup, expand_slice, kill_all_in, pod_cgroup, remove_tree


def test_systemd_slices_expand_as_runc_and_kubelet_do() -> None:
    assert expand_slice("kubepods-burstable-pod123.slice") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice"
    )
    assert expand_slice("kubepods.slice") == "/kubepods.slice"
    assert expand_slice("-.slice") == "/"
    for bad in ("a--b.slice", "-a.slice", "a-.slice", "a/b.slice", "pod123", "../x.slice"):
        with pytest.raises(InvalidArgument, match=r"config\.linux\.cgroup_parent"):
            expand_slice(bad)


def test_the_pod_cgroup_per_driver() -> None:
    kubelet = "/kubepods/burstable/pod123"
    assert pod_cgroup(kubelet, "cgroupfs", "/vmcri", "s1") == PodCgroup(kubelet, False)
    assert pod_cgroup("kubepods-pod1.slice", "systemd", "/vmcri", "s1") == PodCgroup(
        "/kubepods.slice/kubepods-pod1.slice", False
    )
    # a path is a path under either driver; none: vmcri's own, below its parent
    assert pod_cgroup(kubelet, "systemd", "/vmcri", "s1").path == kubelet
    assert pod_cgroup("", "cgroupfs", "/vmcri/", "s1") == PodCgroup("/vmcri/s1", True)
    for bad in ("kubepods/pod1", "/kubepods/../../etc", "/a/./b"):
        with pytest.raises(InvalidArgument, match=r"config\.linux\.cgroup_parent"):
            pod_cgroup(bad, "cgroupfs", "/vmcri", "s1")
    with pytest.raises(InvalidArgument, match="not a systemd slice"):
        pod_cgroup("kubepods-pod1", "systemd", "/vmcri", "s1")


def test_make_creates_every_hierarchy_with_a_usable_cpuset(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    assert cgroups.make("/kubepods/pod1", root) is True
    assert cgroups.make("/kubepods/pod1", root) is False  # all there: kubelet's, or ours
    for name in ("cpu", "memory", "cpuset", "devices", "systemd", "unified"):
        assert Path(root, name, "kubepods/pod1").is_dir(), name
    # a v1 cpuset without CPUs and memory nodes takes no task: the parent's are copied
    assert Path(root, "cpuset/kubepods/pod1/cpuset.cpus").read_text() == "0-1\n"
    assert Path(root, "cpuset/kubepods/cpuset.mems").read_text() == "0\n"
    cgroups.set_memory_limit("/kubepods/pod1", 1 << 30, root)
    assert Path(root, "memory/kubepods/pod1/memory.limit_in_bytes").read_text() == str(1 << 30)


def test_on_pure_v2_the_controllers_are_passed_down_and_memory_max_set(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    cgroups.make("/vmcri/pod1", root)
    assert Path(root, "vmcri/pod1").is_dir()
    # each ancestor hands memory, cpu and pids to its children (the fake keeps the last write)
    assert Path(root, "cgroup.subtree_control").read_text() in {"+memory", "+cpu", "+pids"}
    cgroups.set_memory_limit("/vmcri/pod1", 5 << 20, root)
    assert Path(root, "vmcri/pod1/memory.max").read_text() == str(5 << 20)
    Path(root, "vmcri/pod1/memory.current").write_text("1234\n")
    assert cgroups.memory_usage("/vmcri/pod1", root) == (1234, 5 << 20)


def test_join_writes_the_process_into_each_hierarchy(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    cgroups.make("/p/leaf", root)
    cgroups.join("/p/leaf", 4242, cgroups.hierarchies(root))
    for h in cgroups.hierarchies(root):
        assert Path(h.dir("/p/leaf"), "cgroup.procs").read_text() == "4242", h.name
    assert [h.name for h in cgroups.hierarchies(root) if h.v2] == ["unified"]
    assert cgroups.procs("/p", root) == {4242}
    assert cgroups.dirs("/../etc", root) == []


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


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


@pytest.mark.parametrize("shape", ["hybrid", "v2"])
def test_a_cpu_weight_is_set_to_the_least_and_back_where_the_cpu_controller_is(
    tmp_path: Path, shape: str
) -> None:
    root = hybrid_root(tmp_path) if shape == "hybrid" else v2_root(tmp_path)
    name, least, default = (
        ("cpu.shares", "2", "1024") if shape == "hybrid" else ("cpu.weight", "1", "100")
    )
    cgroups.make("/pool/x", root)
    [cpu] = [d for d in cgroups.dirs("/pool/x", root) if "/cpu" in d or shape == "v2"][:1]
    (Path(cpu) / name).write_text("1024\n" if shape == "hybrid" else "100\n")
    cgroups.set_cpu_weight("/pool/x", True, root)
    assert (Path(cpu) / name).read_text() == least
    cgroups.set_cpu_weight("/pool/x", False, root)
    assert (Path(cpu) / name).read_text() == default
