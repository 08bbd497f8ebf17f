"""VM sizing: what a VM boots with, how far it may grow, and what a pod's limits make it grow to."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.sizing import (
    MIB,
    Demand,
    VmSize,
    boot_size,
    plan_growth,
    pod_demand,
    size_vm,
)
from vmcri.model import Resources

CPU = 100000  # one CPU's quota in a 100 ms period


def cpus(n: float) -> Resources:
    return Resources(cpu_quota=int(n * CPU), cpu_period=CPU)


def mem(mib: int) -> Resources:
    return Resources(memory_limit_in_bytes=mib * MIB)


def test_size_defaults_plus_overhead() -> None:
    options = VmOptions()
    assert size_vm([], Resources(), options) == (
        options.default_memory_mib + options.overhead_memory_mib,
        max(1, options.overhead_vcpus),
    )


def test_size_sums_container_limits_and_rounds_cpus_up() -> None:
    options = VmOptions(overhead_memory_mib=100, overhead_vcpus=1)
    limits = [
        Resources(memory_limit_in_bytes=256 * MIB, cpu_quota=150000, cpu_period=100000),
        Resources(memory_limit_in_bytes=128 * MIB + 1, cpu_quota=20000, cpu_period=100000),
    ]
    assert size_vm(limits, Resources(), options) == (256 + 129 + 100, 2 + 1)


def test_pod_level_limits_win() -> None:
    options = VmOptions(overhead_memory_mib=100, overhead_vcpus=0)
    pod = Resources(memory_limit_in_bytes=512 * MIB, cpu_quota=300000, cpu_period=100000)
    assert size_vm([Resources(memory_limit_in_bytes=MIB)], pod, options) == (612, 3)


def test_the_demand_is_the_pod_level_limit_else_the_sum_never_below_one_container() -> None:
    assert pod_demand(Resources(), [mem(100), mem(200), cpus(0.5), cpus(1)]) == Demand(
        300 * MIB, 1.5
    )
    # kubelet's pod-level limit (the sum, or the pod's own cap) decides when it is sent
    assert pod_demand(mem(1024), [mem(100), mem(200)]) == Demand(1024 * MIB, 0.0)
    # a pod-level cap below one container's limit: the container's limit still fits
    assert pod_demand(Resources(memory_limit_in_bytes=64 * MIB), [mem(100)]).memory_bytes == (
        100 * MIB
    )
    # each resource on its own: a pod-level CPU limit does not hide the containers' memory
    assert pod_demand(cpus(2), [mem(100)]) == Demand(100 * MIB, 2.0)


def test_boot_size_declares_what_the_vm_may_grow_to() -> None:
    options = VmOptions()
    size = boot_size(416, 1, options, host_memory=24151, host_cpus=2)
    assert (size.memory_mib, size.vcpus, size.boot_memory_mib) == (416, 1, 416)
    assert size.max_vcpus == 3  # limits of the host's 2 CPUs, and the guest's own vCPU
    assert boot_size(416, 1, options, host_memory=24151, host_cpus=64).max_vcpus == 9
    # memory up to max_memory_mib (4 GiB by default), in whole guest memory blocks of 128 MiB
    assert size.max_memory_mib == 416 + (4096 - 416) // 128 * 128
    assert size.hotplug_memory_mib % 128 == 0
    # 0: up to MemTotal, as large as the host (a guest can make QEMU back all of it)
    whole = boot_size(416, 1, VmOptions(max_memory_mib=0), host_memory=24151, host_cpus=2)
    assert whole.max_memory_mib == 416 + (24151 - 416) // 128 * 128


def test_a_pod_with_a_pod_level_memory_limit_gets_no_room_beyond_it() -> None:
    # kubelet sent the pod's limit: the VM boots at it plus the guest's share and has no
    # virtio-mem region a guest could make QEMU fill beyond what the pod may use.
    size = boot_size(672, 1, VmOptions(), host_memory=24151, host_cpus=2, pod_memory_limit=True)
    assert (size.max_memory_mib, size.hotplug_memory_mib) == (672, 0)
    with pytest.raises(InvalidArgument, match="pod-level memory limit it was started with"):
        plan_growth(size, Demand(600 * MIB, 0), VmOptions(), "resources")


def test_boot_size_follows_the_options_but_never_the_host_beyond_its_memory() -> None:
    options = VmOptions(max_vcpus=6, max_memory_mib=2048)
    size = boot_size(416, 1, options, host_memory=24151, host_cpus=2)
    assert (size.max_vcpus, size.max_memory_mib) == (6, 416 + 1536)
    huge = boot_size(416, 1, VmOptions(max_memory_mib=1 << 20), host_memory=4096, host_cpus=2)
    assert huge.max_memory_mib <= 4096
    # a VM that boots larger than the maximum keeps its size as the maximum
    big = boot_size(8192, 12, options, host_memory=24151, host_cpus=2)
    assert (big.max_vcpus, big.max_memory_mib, big.hotplug_memory_mib) == (12, 8192, 0)


def test_without_vcpu_hotplug_a_vm_gets_no_spare_vcpus_unless_asked() -> None:
    size = boot_size(416, 1, VmOptions(), host_memory=24151, host_cpus=2, hotplug_vcpus=False)
    assert size.max_vcpus == 1 and size.max_memory_mib > 416  # memory still grows
    with pytest.raises(InvalidArgument, match="not hotplugged under software emulation") as exc:
        plan_growth(size, Demand(0, 2.0), VmOptions(), "config.linux.resources", False)
    # a limit of less than a CPU fits the 1-vCPU VM: no growth needed, nothing refused
    assert plan_growth(size, Demand(0, 0.5), VmOptions(), "r", False) == size
    assert "config.linux.resources.cpu_quota" in exc.value.message
    asked = boot_size(416, 1, VmOptions(max_vcpus=3), host_memory=24151, host_cpus=2,
                      hotplug_vcpus=False)  # fmt: skip
    assert asked.max_vcpus == 3


def test_a_microvm_cannot_grow() -> None:
    size = boot_size(416, 1, VmOptions(machine="microvm"), host_memory=24151, host_cpus=8)
    assert (size.max_vcpus, size.max_memory_mib) == (1, 416)
    with pytest.raises(InvalidArgument, match="microvm machine cannot grow"):
        plan_growth(size, Demand(0, 2.0), VmOptions(machine="microvm"), "linux")


SIZE = VmSize(memory_mib=416, vcpus=1, boot_memory_mib=416, max_memory_mib=2464, max_vcpus=2)


def test_limits_that_fit_leave_the_vm_as_it_is() -> None:
    options = VmOptions()  # 160 MiB and 1 vCPU for the guest
    assert plan_growth(SIZE, Demand(256 * MIB, 0.0), options, "linux") == SIZE
    assert plan_growth(SIZE, Demand(0, 0.0), options, "linux") == SIZE


def test_limits_beyond_the_vm_grow_it_in_virtio_mem_blocks() -> None:
    options = VmOptions()
    target = plan_growth(SIZE, Demand(600 * MIB + 1, 1.0), options, "linux")
    assert target.vcpus == 2  # 1 CPU of limits plus the guest's own
    assert target.memory_mib == 416 + 346  # 601 + 160 = 761 MiB, plugged in 2 MiB blocks
    assert target.plugged_mib == 346
    assert (target.boot_memory_mib, target.max_memory_mib, target.max_vcpus) == (416, 2464, 2)


def test_a_vm_never_shrinks() -> None:
    grown = VmSize(memory_mib=1024, vcpus=2, boot_memory_mib=416, max_memory_mib=2464, max_vcpus=2)
    assert plan_growth(grown, Demand(128 * MIB, 0.0), VmOptions(), "linux") == grown


def test_limits_beyond_the_maximum_are_refused_naming_the_field() -> None:
    options = VmOptions()
    with pytest.raises(InvalidArgument) as info:
        plan_growth(SIZE, Demand(0, 2.5), options, "config.linux.resources")
    assert info.value.message.startswith("config.linux.resources.cpu_quota: ")
    assert "need 3 vCPUs" in info.value.message and "options.max_vcpus" in info.value.message
    # at its maximum the VM gives up the guest's own vCPU before it refuses a limit it can hold
    assert plan_growth(SIZE, Demand(0, 1.5), options, "r").vcpus == SIZE.max_vcpus == 2
    with pytest.raises(InvalidArgument) as info:
        plan_growth(SIZE, Demand(2305 * MIB, 0.0), options, "resources")
    assert info.value.message.startswith("resources.memory_limit_in_bytes: ")
    assert "2465 MiB" in info.value.message and "2464 MiB" in info.value.message
    # the largest that fits
    assert plan_growth(SIZE, Demand(2304 * MIB, 1.0), options, "r").memory_mib == 2464


def test_a_record_from_before_vms_grew_cannot_grow() -> None:
    size = VmSize.from_runtime({"memory_mib": "416", "vcpus": "1"})
    assert size == VmSize(416, 1, 416, 416, 1)
    with pytest.raises(InvalidArgument, match=r"^linux\.memory_limit_in_bytes"):
        plan_growth(size, Demand(512 * MIB, 0.0), VmOptions(), "linux")
    assert VmSize.from_runtime({}) is None
    assert VmSize.from_runtime({"memory_mib": "x", "vcpus": "1"}) is None
    assert VmSize.from_runtime(SIZE.runtime()) == SIZE
