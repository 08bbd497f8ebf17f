"""A VM pod's host processes run in its pod cgroup: real libvirt, QEMU, virtiofsd, kernel.

libvirt puts QEMU in ``/machine/qemu-N-<name>.libvirt-qemu`` whatever kubelet's
``cgroup_parent`` says; vmcri moves it, every thread and every other process of the
domain (virtiofsd), into ``<pod cgroup>/vmcri-<sandbox id>`` in every hierarchy before
the guest runs, so the guest's memory is charged to the pod. One daemon, two handlers:
``vm`` restores pods from a template (9p), ``vmcold`` cold-boots them with virtiofs.
Every cgroup path is unique to the test run and removed afterwards.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.daemon.conftest import start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK
from tests.support.host_cgroups import comm, misplaced_threads, qemu_pid, remove_tree
from vmcri.api import api_pb2 as pb
from vmcri.host import cgroups

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

MIB = 1 << 20
RUN = uuid.uuid4().hex[:8]
VMCRI_PARENT = f"/vmcri-test-{RUN}"  # the handlers' own parent (pods without cgroup_parent)
KUBEPODS = f"/kubepods-test-{RUN}"  # stands in for kubelet's /kubepods
ALLOWANCE_MIB = 192
HANDLERS = f"""
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
cgroup_parent = "{VMCRI_PARENT}"
[runtimes.vmcold]
backend = "vm"
[runtimes.vmcold.options]
template = "off"
cgroup_parent = "{VMCRI_PARENT}"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    try:
        with vm_daemon(tmp_path_factory.mktemp("cgroup"), NO_POD_NETWORK + HANDLERS) as env:
            yield env
    finally:
        remove_tree(KUBEPODS)
        remove_tree(VMCRI_PARENT)


def remove_pod(env: VmEnv, sandbox_id: str) -> None:
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.sandboxes.remove(sandbox_id)


def guest_writes_count_in(env: VmEnv, container_id: str, cgroup: str) -> None:
    """48 MiB the guest writes into its memory (a tmpfs) are charged to ``cgroup``."""
    before = cgroups.memory_usage(cgroup)[0]
    fill = ["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=48"]
    done = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=fill, timeout=120), timeout=150
    )
    assert done.exit_code == 0, done.stderr
    grown = cgroups.memory_usage(cgroup)[0] - before
    assert grown >= 40 * MIB, grown // MIB


def test_a_restored_pod_runs_in_kubelet_s_cgroup_which_it_made_and_removes(env: VmEnv) -> None:
    parent = f"{KUBEPODS}/burstable/pod-restored"
    linux = pb.LinuxPodSandboxConfig(cgroup_parent=parent)
    sandbox_id, pod = env.run_pod("cg-restored", "vm", linux)
    assert env.started_as(sandbox_id) == "restored"
    leaf = f"{parent}/vmcri-{sandbox_id}"
    pid = qemu_pid(sandbox_id)
    assert misplaced_threads(pid, leaf) == []
    assert env.runtime_info(sandbox_id)["cgroup"] == leaf
    # The guest's memory counts there, not in libvirt's cgroup.
    container_id = env.create(sandbox_id, pod, "c", ["sh", "-c", "sleep 600"])
    env.start(container_id)
    guest_writes_count_in(env, container_id, leaf)
    limit = cgroups.memory_usage(leaf)[1]
    # the pod cgroup was missing (no kubelet here): vmcri made it, limited to the VM's
    # maximum plus QEMU's allowance, and removes it with the pod
    most = int(env.runtime_info(sandbox_id)["max_memory_mib"])
    assert cgroups.memory_usage(parent)[1] == (most + ALLOWANCE_MIB) * MIB
    assert limit == -1  # the leaf itself has no limit of its own
    remove_pod(env, sandbox_id)
    assert not any(os.path.isdir(d) for d in cgroups.dirs(parent))


def test_a_cold_pod_s_qemu_and_virtiofsd_run_in_kubelet_s_existing_cgroup(env: VmEnv) -> None:
    parent = f"{KUBEPODS}/burstable/pod-cold"
    cgroups.make(parent)  # kubelet made it, with its limit: vmcri must keep both
    cgroups.set_memory_limit(parent, 3 << 30)
    linux = pb.LinuxPodSandboxConfig(cgroup_parent=parent)
    sandbox_id, pod = env.run_pod("cg-cold", "vmcold", linux)
    assert env.started_as(sandbox_id) == "cold"
    leaf = f"{parent}/vmcri-{sandbox_id}"
    pid = qemu_pid(sandbox_id)
    assert misplaced_threads(pid, leaf) == []
    members = cgroups.procs(leaf)
    daemons = [p for p in members if comm(p).startswith("virtiofsd")]
    assert pid in members and daemons, {p: comm(p) for p in members}
    for helper in daemons:
        assert misplaced_threads(helper, leaf) == [], comm(helper)
    container_id = env.create(sandbox_id, pod, "c", ["sh", "-c", "sleep 600"])
    env.start(container_id)
    guest_writes_count_in(env, container_id, leaf)
    assert cgroups.memory_usage(parent)[1] == 3 << 30  # kubelet's limit rules
    remove_pod(env, sandbox_id)
    assert all(os.path.isdir(d) for d in cgroups.dirs(parent))  # kubelet's: it stays
    assert not any(os.path.isdir(d) for d in cgroups.dirs(leaf))


def test_without_a_cgroup_parent_a_pod_runs_under_vmcri_s_own_parent(env: VmEnv) -> None:
    sandbox_id, _pod = env.run_pod("cg-default", "vm")
    pod_cgroup = f"{VMCRI_PARENT}/{sandbox_id}"
    leaf = f"{pod_cgroup}/vmcri-{sandbox_id}"
    assert misplaced_threads(qemu_pid(sandbox_id), leaf) == []
    most = int(env.runtime_info(sandbox_id)["max_memory_mib"])
    assert most < 4096 + 416  # bounded by max_memory_mib, not the host's memory
    assert cgroups.memory_usage(pod_cgroup)[1] == (most + ALLOWANCE_MIB) * MIB
    remove_pod(env, sandbox_id)
    assert not any(os.path.isdir(d) for d in cgroups.dirs(pod_cgroup))


def test_a_restarted_daemon_places_a_running_vm_again(env: VmEnv) -> None:
    sandbox_id, _pod = env.run_pod("cg-restart", "vm")
    leaf = env.runtime_info(sandbox_id)["cgroup"]
    pid = qemu_pid(sandbox_id)
    stop_daemon(env.daemon, signal.SIGKILL)
    # while no daemon runs, QEMU's threads leave the leaf, as a vCPU hotplug moves them (v1)
    cpu = next(h for h in cgroups.hierarchies() if h.name.split(",")[0] == "cpu" or h.v2)
    with open(os.path.join(cpu.mount, "cgroup.procs"), "w") as procs:
        procs.write(str(pid))
    assert misplaced_threads(pid, leaf) != []
    env.daemon = start_daemon(env.tmp, config=env.tmp / "config.toml")
    assert env.pod_state(sandbox_id) == pb.SANDBOX_READY  # the restarted daemon looks at it
    assert misplaced_threads(pid, leaf) == []
    remove_pod(env, sandbox_id)
