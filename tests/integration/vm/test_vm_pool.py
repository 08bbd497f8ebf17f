"""The warm pool of restored VMs with the real thing: pods taken from it, its VMs lost,
the daemon restarted (stopped or killed) with VMs in it.

One daemon with ``pool_size = 2``; each test waits for the pool to be full first.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.handlers.vm.pool_vms import POOL_FILE, pool_vms_on_disk
from vmcri.host.cgroups import dirs, remove_tree

from .conftest import VmEnv, destroy_domain, domain_exists, vm_daemon

pytestmark = pytest.mark.integration

POOL_SIZE = 2
FILL_TIMEOUT_S = 240  # two restores and agent answers under TCG, on a shared host
RUN = uuid.uuid4().hex[:8]
PARENT = f"/vmcri-test-pool-{RUN}"
HANDLERS = f"""
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
pool_size = {POOL_SIZE}
cgroup_parent = "{PARENT}"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    try:
        with vm_daemon(tmp_path_factory.mktemp("pool"), NO_POD_NETWORK + HANDLERS) as env:
            yield env
    finally:
        remove_tree(PARENT)


def backend_root(env: VmEnv) -> Path:
    return env.daemon.root / "backends" / "vm"


def pool_ids(env: VmEnv, idle: bool = True) -> set[str]:
    """The pool VMs as their markers say: the idle ones (or all, being made too)."""
    return {vm.sandbox_id for vm in pool_vms_on_disk(backend_root(env)) if vm.idle or not idle}


def wait_full(env: VmEnv) -> set[str]:
    def full() -> bool:
        ids = pool_ids(env)
        return len(ids) == POOL_SIZE and all(domain_state(i) == "paused" for i in ids)

    wait_for(full, FILL_TIMEOUT_S, f"{POOL_SIZE} paused VMs in the pool")
    return pool_ids(env)


def domain_state(sandbox_id: str) -> str:
    result = subprocess.run(
        ["virsh", "-c", "qemu:///system", "domstate", f"vmcri-{sandbox_id}"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def leftovers(env: VmEnv, sandbox_id: str) -> list[str]:
    """Whatever of the VM is still on the host: domain, dirs, sockets, cgroup."""
    found = []
    if domain_exists(sandbox_id):
        found.append("domain")
    for path in (env.state_dir(sandbox_id), backend_root(env) / sandbox_id):
        if path.exists():
            found.append(str(path))
    sockets = env.daemon.state / "backends" / "vm" / "sockets"
    found += [str(s) for s in sockets.glob(f"{sandbox_id[:16]}.*")]
    found += [d for d in dirs(f"{PARENT}/{sandbox_id}") if Path(d).is_dir()]
    return found


def logged(env: VmEnv, pod: str) -> Callable[[], bool]:
    return lambda: f"hi {pod}" in env.log_of(pod, "app")


def gone(env: VmEnv, sandbox_id: str) -> Callable[[], bool]:
    return lambda: leftovers(env, sandbox_id) == []


def cpu_weights(cgroup: str) -> list[str]:
    return [
        (Path(d) / name).read_text().strip()
        for d in dirs(cgroup)
        for name in ("cpu.shares", "cpu.weight")
        if (Path(d) / name).exists()
    ]


def exec_in(env: VmEnv, cid: str, *cmd: str) -> str:
    result = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=60), timeout=90
    )
    assert result.exit_code == 0, result.stderr
    return str(result.stdout.decode())


def remove(env: VmEnv, sandbox_id: str) -> None:
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.sandboxes.remove(sandbox_id)


def test_two_pods_from_the_pool_run_and_share_no_entropy_hostname_or_address(env: VmEnv) -> None:
    idle = wait_full(env)
    pods = {}
    for name in ("pool-a", "pool-b"):
        sandbox_id, config = env.run_pod(name)
        assert sandbox_id in idle  # the pool VM's own ID: nothing was renamed
        assert env.started_as(sandbox_id) == "pooled"
        assert env.pod_state(sandbox_id) == pb.SANDBOX_READY
        assert not (backend_root(env) / sandbox_id / POOL_FILE).exists()
        assert domain_state(sandbox_id) == "running"
        cid = env.create(sandbox_id, config, "app", ["sh", "-c", f"echo hi {name}; sleep 1000"])
        env.start(cid)
        wait_for(logged(env, name), 60, "the container's log")
        pods[name] = (sandbox_id, cid)

    seen = {}
    for name, (sandbox_id, cid) in pods.items():
        assert exec_in(env, cid, "hostname").strip() == name
        assert exec_in(env, cid, "ls", "/sys/class/net").split() == ["lo"]  # no pool NIC
        random = exec_in(env, cid, "sh", "-c", "head -c 32 /dev/urandom | od -An -tx1")
        boot_id = exec_in(env, cid, "cat", "/proc/sys/kernel/random/boot_id").strip()
        seen[name] = (random, boot_id)
        # QEMU, with all its threads, in the pod's own cgroup (not the pool's).
        info = env.runtime_info(sandbox_id)
        pid = Path(f"/run/libvirt/qemu/vmcri-{sandbox_id}.pid").read_text().strip()
        for task in Path(f"/proc/{pid}/task").iterdir():
            assert info["cgroup"] in (task / "cgroup").read_text()
        # The pool's least CPU weight went with the pool: the pod has the default one.
        assert cpu_weights(info["cgroup_pod"]) in (["1024"], ["100"])
    assert seen["pool-a"][0] != seen["pool-b"][0]
    # The kernel makes boot_id at its first read, from its RNG: nothing read it before the
    # template was saved, so each clone makes its own, after its reseeds.
    assert seen["pool-a"][1] != seen["pool-b"][1]

    wait_full(env)  # refilled, with new VMs
    assert not pool_ids(env) & idle
    for sandbox_id, _cid in pods.values():
        remove(env, sandbox_id)
        assert leftovers(env, sandbox_id) == []


def test_an_idle_pool_vm_that_dies_is_discarded_and_replaced(env: VmEnv) -> None:
    idle = wait_full(env)
    victim = sorted(idle)[0]
    destroy_domain(victim)
    wait_for(lambda: leftovers(env, victim) == [], 60, "the dead pool VM's files gone")
    refilled = wait_full(env)
    assert victim not in refilled and len(refilled) == POOL_SIZE


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
def test_a_daemon_restart_leaves_nothing_of_the_pool_behind(env: VmEnv, kill: bool) -> None:
    """Stopped or killed while a pool VM is being made and others wait: whatever the
    earlier run left (domains, dirs, sockets, cgroups) is gone once the daemon is back."""
    idle = wait_full(env)
    markers = {i: json.loads((backend_root(env) / i / POOL_FILE).read_text()) for i in idle}
    assert all(m["memory_mib"] > 0 for m in markers.values())
    sandbox_id, _config = env.run_pod(f"restart-{int(kill)}")  # a refill follows
    remove(env, sandbox_id)

    def refilling() -> bool:
        return bool(pool_ids(env, idle=False) - pool_ids(env))

    wait_for(refilling, 60, "a pool VM being made")
    left = pool_ids(env, idle=False) | idle
    env.restart(kill=kill)
    for vm in left:
        wait_for(gone(env, vm), 120, "the earlier run's pool VMs gone")
    assert not wait_full(env) & left
