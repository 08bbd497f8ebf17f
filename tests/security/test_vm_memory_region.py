"""A guest that writes its whole virtio-mem region: QEMU stays inside the pod's cgroup.

The attack (issue 20.1): a privileged container unbinds the guest's virtio_mem driver and
writes the region's unplugged memory through ``/dev/mem``; QEMU (7.2) backs every page it
is given, so the region's size is what the guest can take. It used to be the host's
MemTotal, and QEMU ran in libvirt's cgroup: a 416 MiB pod grew QEMU to 1.8 GiB in 4 s.
Now the region is no larger than the pod may grow to (``max_memory_mib`` here: 928 MiB in
all) and QEMU runs in the pod's cgroup: a cgroup vmcri made holds the VM's maximum plus
QEMU's allowance, so the attack only uses what the pod could have grown to; under
kubelet's tighter limit the kernel OOM-kills QEMU inside that cgroup, and the pod is
reported dead. Real libvirt, QEMU, guest kernel and host cgroups.

Seen here (Debian's 6.1 guest, QEMU 7.2 TCG): the guest's ``/dev/mem`` takes only the
region's first 64 MiB (writes beyond return 0), whether the driver was unbound or
``rmmod``-ed; QEMU's RSS grows by exactly that. So the first test checks that what was
written is charged to the pod, and the second makes the limit tight enough for 64 MiB.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.host_cgroups import qemu_pid, remove_tree
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.host import cgroups

pytestmark = pytest.mark.integration

MIB = 1 << 20
RUN = uuid.uuid4().hex[:8]
VMCRI_PARENT = f"/vmcri-sec-{RUN}"
KUBEPODS = f"/kubepods-sec-{RUN}"
MAX_MEMORY_MIB = 1024  # a 416 MiB VM gets a 512 MiB region (whole 128 MiB blocks)
REGION_MIB = (MAX_MEMORY_MIB - 416) // 128 * 128
HANDLER = f"""
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
template = "off"
max_memory_mib = {MAX_MEMORY_MIB}
cgroup_parent = "{VMCRI_PARENT}"
"""
# Find the region (its resource is named after the virtio device), take the driver off
# it, write all of it. busybox's shell does 64-bit arithmetic.
ATTACK = r"""
line=$(grep -E '^ *[0-9a-f]+-[0-9a-f]+ : virtio[0-9]+$' /proc/iomem | head -n1)
[ -n "$line" ] || { echo "no virtio-mem region"; cat /proc/iomem; exit 2; }
dev=${line##* : }; range=${line%% : *}; range=${range# *}
start=$((0x${range%-*})); end=$((0x${range#*-}))
echo "region $dev $(( (end + 1 - start) / 1048576 )) MiB"
echo "$dev" > /sys/bus/virtio/drivers/virtio_mem/unbind || exit 3
dd if=/dev/zero of=/dev/mem bs=1M seek=$((start / 1048576)) \
    count=$(( (end + 1 - start) / 1048576 )) 2>&1
echo "wrote rc=$?"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    try:
        with vm_daemon(
            tmp_path_factory.mktemp("memregion"), NO_POD_NETWORK + HANDLER, wait_template=False
        ) as env:
            yield env
    finally:
        remove_tree(KUBEPODS)
        remove_tree(VMCRI_PARENT)


def privileged_pod(cgroup_parent: str = "") -> pb.LinuxPodSandboxConfig:
    return pb.LinuxPodSandboxConfig(
        cgroup_parent=cgroup_parent,
        security_context=pb.LinuxSandboxSecurityContext(privileged=True),
    )


def attack(env: VmEnv, sandbox_id: str, pod: pb.PodSandboxConfig) -> tuple[str, bool]:
    """Run the attack in a privileged container; its output, and whether it finished (the
    VM may die under it)."""
    privileged = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(privileged=True)
    )
    container_id = env.create(sandbox_id, pod, "attacker", ["sleep", "600"], linux=privileged)
    env.start(container_id)
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", ATTACK], timeout=240)
    try:
        done = env.runtime.ExecSync(request, timeout=300)
    except grpc.RpcError as exc:
        return str(exc.details()), False
    return done.stdout.decode() + done.stderr.decode(), True


def peak(path: str) -> int:
    """The cgroup's peak memory usage (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``)."""
    h = cgroups.memory_hierarchy()
    assert h is not None
    name = "memory.peak" if h.v2 else "memory.max_usage_in_bytes"
    with open(os.path.join(h.dir(path), name)) as f:
        return int(f.read())


def written_mib(output: str) -> int:
    """dd's "N+0 records out" (1 MiB records)."""
    found = re.search(r"^(\d+)\+\d+ records out", output, re.M)
    assert found, output
    return int(found.group(1))


def test_the_region_is_bounded_and_what_the_guest_writes_is_the_pod_s(env: VmEnv) -> None:
    sandbox_id, pod = env.run_pod("region", "vm", privileged_pod())
    pod_cgroup = f"{VMCRI_PARENT}/{sandbox_id}"
    most = int(env.runtime_info(sandbox_id)["max_memory_mib"])
    assert most == 416 + REGION_MIB
    limit = cgroups.memory_usage(pod_cgroup)[1]
    assert limit == (most + 192) * MIB
    before = cgroups.memory_usage(pod_cgroup)[0]
    output, _finished = attack(env, sandbox_id, pod)
    # the region the guest found is the pod's room to grow, not the host's memory
    assert f" {REGION_MIB} MiB" in output, output
    # what it wrote QEMU backs, and the pod's cgroup is charged for it, within its limit
    wrote = written_mib(output)
    assert wrote >= 32, output
    assert cgroups.memory_usage(pod_cgroup)[0] - before >= (wrote - 16) * MIB, output
    assert peak(pod_cgroup) <= limit
    pid = qemu_pid(sandbox_id)
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert rss_kib * 1024 <= limit, (rss_kib // 1024, limit // MIB)


def test_under_kubelet_s_limit_qemu_is_oom_killed_and_the_pod_reported_dead(
    env: VmEnv,
) -> None:
    parent = f"{KUBEPODS}/burstable/pod-region"
    cgroups.make(parent)  # kubelet's pod cgroup, no limit yet
    sandbox_id, pod = env.run_pod("region-k", "vm", privileged_pod(parent))
    pid = qemu_pid(sandbox_id)
    # kubelet sets a limit the running pod is close to (an in-place resize does): the
    # attack's writes are charged to the pod and go beyond it
    limit = cgroups.memory_usage(parent)[0] + 24 * MIB
    cgroups.set_memory_limit(parent, limit)
    host_before = _mem_available()
    output, _finished = attack(env, sandbox_id, pod)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 120, f"QEMU killed: {output}")
    assert peak(parent) <= limit, output
    wait_for(lambda: env.pod_state(sandbox_id) == pb.SANDBOX_NOTREADY, 60, "the pod NOTREADY")
    # the host kept its memory (other pods on this shared host move it by tens of MiB)
    assert _mem_available() > host_before - 256 * MIB
    statuses = env.runtime.ListContainers(
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id)), timeout=30
    ).containers
    assert [c.state for c in statuses] == [pb.CONTAINER_EXITED], statuses


def _mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")
