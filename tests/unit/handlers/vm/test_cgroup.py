"""A VM pod's processes in its pod cgroup: what is made, moved and removed (a fake tree)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cgroups import hybrid_root, v2_root
from vmcri.handlers.vm.cgroup import Placement, VmCgroups, _libvirt_domain_cgroup
from vmcri.handlers.vm.options import VmOptions
from vmcri.ids import new_id
from vmcri.model import Metadata, PodConfig
from vmcri.store.records import SandboxRecord

MIB = 1 << 20


def record(cgroup_parent: str = "") -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
    config = PodConfig(metadata=config.metadata, cgroup_parent=cgroup_parent)
    return SandboxRecord(id=new_id(), handler="vm", backend="vm", config=config)


def test_a_pod_without_a_parent_gets_vmcri_s_own_limited_cgroup(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    vm = VmCgroups("cgroupfs", VmOptions(qemu_memory_allowance_mib=100), root)
    sandbox = record()
    placement = vm.prepare(sandbox, max_memory_mib=1000)
    assert placement.pod == f"/vmcri/{sandbox.id}" and placement.made_pod
    assert placement.leaf == f"/vmcri/{sandbox.id}/vmcri-{sandbox.id}"
    limit = Path(root, "memory", placement.pod.lstrip("/"), "memory.limit_in_bytes")
    assert limit.read_text() == str(1100 * MIB)  # the VM's most plus QEMU's allowance
    assert Placement.from_runtime(placement.runtime()) == placement
    for f in Path(root).rglob("*"):  # what the kernel would leave once QEMU is gone
        if f.is_file() and placement.pod.strip("/") in str(f):
            f.unlink()
    assert vm.remove(placement)
    assert not Path(root, "memory", placement.pod.lstrip("/")).exists()
    assert Path(root, "memory/vmcri").is_dir()  # the handler's parent stays


def test_kubelet_s_pod_cgroup_keeps_its_limit_and_stays(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    Path(root, "memory/kubepods/podX").mkdir(parents=True)
    for name in ("cpu", "cpuacct", "cpuset", "devices", "pids", "systemd", "unified"):
        Path(root, name, "kubepods/podX").mkdir(parents=True)
    vm = VmCgroups("cgroupfs", VmOptions(), root)
    placement = vm.prepare(record("/kubepods/podX"), max_memory_mib=1000)
    assert not placement.made_pod
    assert not Path(root, "memory/kubepods/podX/memory.limit_in_bytes").exists()
    for f in Path(root).rglob("*"):  # what the kernel would leave once QEMU is gone
        if f.is_file() and "vmcri-" in str(f):
            f.unlink()
    assert vm.remove(placement)
    assert Path(root, "memory/kubepods/podX").is_dir()  # kubelet's, kubelet removes it


def test_a_missing_kubelet_parent_is_made_and_removed_with_the_pod(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    vm = VmCgroups("systemd", VmOptions(), root)
    placement = vm.prepare(record("kubepods-burstable-pod1.slice"), max_memory_mib=500)
    assert placement.pod == "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
    assert placement.made_pod
    assert Path(root, "memory", placement.pod.lstrip("/"), "memory.limit_in_bytes").exists()


def test_placing_moves_qemu_into_the_leaf_in_every_hierarchy(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    vm = VmCgroups("cgroupfs", VmOptions(), root)
    placement = vm.prepare(record(), max_memory_mib=500)
    placed = vm.place(placement, 4194305, "vmcri-x")  # a pid that never exists: written
    for name in ("cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "unified"):
        procs = Path(root, name, placement.leaf.lstrip("/"), "cgroup.procs")
        assert procs.read_text() == "4194305", name
    assert placed.leaf == placement.leaf


def test_libvirt_s_domain_cgroup_is_recognised_and_ours_is_not() -> None:
    name = "vmcri-" + "ab" * 32
    short = name[:20]
    assert _libvirt_domain_cgroup(f"/machine/qemu-3-{short}.libvirt-qemu/vcpu0", name) == (
        f"/machine/qemu-3-{short}.libvirt-qemu"
    )
    escaped = short.replace("-", "\\x2d")
    scope = f"/machine.slice/machine-qemu\\x2d3\\x2d{escaped}.scope"
    assert _libvirt_domain_cgroup(scope + "/emulator", name) == scope
    assert _libvirt_domain_cgroup(f"/vmcri/{name[6:]}/{name}", name) == ""  # our leaf
    assert _libvirt_domain_cgroup("/", name) == ""
    assert _libvirt_domain_cgroup("/machine/qemu-4-vmcri-other.libvirt-qemu", name) == ""


def test_kubelet_s_cgroup_in_only_some_hierarchies_is_still_kubelet_s(tmp_path: Path) -> None:
    root = hybrid_root(tmp_path)
    Path(root, "memory/kubepods/podY").mkdir(parents=True)
    placement = VmCgroups("cgroupfs", VmOptions(), root).prepare(record("/kubepods/podY"), 500)
    assert not placement.made_pod  # neither limited nor removed by vmcri
    assert Path(root, "cpu/kubepods/podY", placement.leaf.rsplit("/", 1)[1]).is_dir()


def test_on_pure_v2_qemu_joins_the_one_tree(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    vm = VmCgroups("cgroupfs", VmOptions(), root)
    placement = vm.prepare(record(), max_memory_mib=500)
    vm.place(placement, 4194305, "vmcri-x")
    assert Path(root, placement.leaf.lstrip("/"), "cgroup.procs").read_text() == "4194305"
    assert Path(root, placement.pod.lstrip("/"), "memory.max").read_text() == str(692 * MIB)
