"""A running pod VM grows when its containers' limits need more: real libvirt, QEMU and guest.

One daemon with two vm handlers: ``vm`` restores pods from the shared VM template (9p),
``vmcold`` cold-boots them (templates off, so virtiofs): a clone must grow exactly as a
cold-booted VM does. The pods are sized from nothing (no pod-level resources, as crictl
sends them): 256 MiB + 160 MiB for the guest and 1 vCPU, growing to 3 vCPUs and the
host's MemTotal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GUEST_MIB = 160  # overhead_memory_mib
# Under software emulation vCPUs are not hotplugged and a VM gets no spare ones unless
# max_vcpus asks (sizing.boot_size): these handlers ask, as a KVM host would not need to.
HANDLERS = """
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
max_vcpus = 3
[runtimes.vmcold]
backend = "vm"
[runtimes.vmcold.options]
template = "off"
max_vcpus = 3
"""
PROBE = "nproc; cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max; grep MemTotal /proc/meminfo"


@pytest.fixture(scope="module")
def grow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("grow"), NO_POD_NETWORK + HANDLERS) as env:
        yield env


def limits(cpus: float = 0, memory_mib: int = 0) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=100000 if cpus else 0,
        cpu_quota=int(cpus * 100000),
        memory_limit_in_bytes=memory_mib * MIB,
    )


def probe(env: VmEnv, container_id: str) -> tuple[int, str, int, int]:
    """What the container sees: online CPUs, its cgroup's cpu.max and memory.max, MemTotal."""
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", PROBE], timeout=60)
    result = env.runtime.ExecSync(request, timeout=90)
    assert result.exit_code == 0, result.stderr
    nproc, cpu_max, memory_max, meminfo = result.stdout.decode().splitlines()
    return int(nproc), cpu_max, int(memory_max), int(meminfo.split()[1]) * 1024


def size_of(env: VmEnv, sandbox_id: str) -> tuple[int, int]:
    facts = env.runtime_info(sandbox_id)
    return int(facts["memory_mib"]), int(facts["vcpus"])


@pytest.mark.parametrize(("handler", "start"), [("vm", "restored"), ("vmcold", "cold")])
def test_a_container_above_the_vm_grows_it_and_gets_its_limits(
    grow_env: VmEnv, handler: str, start: str
) -> None:
    env = grow_env
    sandbox_id, pod = env.run_pod(f"grow-{handler}", handler)
    assert env.started_as(sandbox_id) == start
    assert size_of(env, sandbox_id) == (256 + GUEST_MIB, 1)
    assert int(env.runtime_info(sandbox_id)["max_vcpus"]) >= 2

    # 1 CPU and 600 MiB: the VM needs 2 vCPUs (one for the guest) and 760 MiB
    started = time.monotonic()
    app = env.create(
        sandbox_id, pod, "app", ["sleep", "1000"], linux=pb.LinuxContainerConfig(
            resources=limits(cpus=1, memory_mib=600)
        )
    )  # fmt: skip
    created_s = time.monotonic() - started
    env.start(app)
    assert size_of(env, sandbox_id) == (600 + GUEST_MIB, 2)
    nproc, cpu_max, memory_max, mem_total = probe(env, app)
    assert nproc == 2  # the hotplugged vCPU is online
    assert cpu_max == "100000 100000" and memory_max == 600 * MIB
    assert mem_total > 600 * MIB  # the guest holds the container's whole limit

    # UpdateContainerResources grows it again before the container gets the limit
    started = time.monotonic()
    env.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=app, linux=limits(1, 900)), timeout=120
    )
    updated_s = time.monotonic() - started
    assert size_of(env, sandbox_id) == (900 + GUEST_MIB, 2)
    _, _, memory_max, grown_total = probe(env, app)
    assert memory_max == 900 * MIB and grown_total - mem_total == 300 * MIB

    # UpdatePodSandboxResources: kubelet's new pod-level limits
    env.runtime.UpdatePodSandboxResources(
        pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=sandbox_id, resources=limits(1, 1200)),
        timeout=120,
    )
    assert size_of(env, sandbox_id) == (1200 + GUEST_MIB, 2)
    assert probe(env, app)[3] - grown_total == 300 * MIB
    log = env.daemon.log.read_text()
    assert f"VM vmcri-{sandbox_id} grew from 416 MiB/1 vCPU to 760 MiB/2 vCPU in " in log

    # The size is on disk: a daemon killed and restarted grows the VM from where it was
    env.restart(kill=True)
    env.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=app, linux=limits(1, 1300)), timeout=120
    )
    assert size_of(env, sandbox_id) == (1300 + GUEST_MIB, 2)
    assert probe(env, app)[2] == 1300 * MIB
    print(f"{handler}: CreateContainer with growth {created_s:.2f} s, "
          f"UpdateContainerResources +300 MiB {updated_s:.2f} s")  # fmt: skip

    # Beyond the maximum: refused naming the field, nothing created, the VM as it was
    for resources, field in (
        (limits(cpus=64), "config.linux.resources.cpu_quota"),
        (limits(memory_mib=64 * 1024 * 1024), "config.linux.resources.memory_limit_in_bytes"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            env.create(sandbox_id, pod, "huge", ["true"], linux=pb.LinuxContainerConfig(
                resources=resources
            ))  # fmt: skip
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value.details()).startswith(f"{field}: ")
    listed = env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30).containers
    assert [c.id for c in listed if c.pod_sandbox_id == sandbox_id] == [app]
    assert size_of(env, sandbox_id) == (1300 + GUEST_MIB, 2)
    assert probe(env, app)[0] == 2

    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.sandboxes.remove(sandbox_id)
