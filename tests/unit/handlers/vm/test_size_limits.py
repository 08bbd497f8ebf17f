"""VM sizing refuses what the host or QEMU cannot give, naming the pod's field, before libvirt."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.sizing import MAX_VCPUS, MIB, host_memory_mib, size_vm
from vmcri.model import Resources


def test_memory_above_the_hosts_is_refused_with_the_field() -> None:
    options = VmOptions(overhead_memory_mib=160)
    pod = Resources(memory_limit_in_bytes=900 * MIB)
    assert size_vm([], pod, options, host_memory=1060) == (1060, 1)
    with pytest.raises(InvalidArgument) as info:
        size_vm([], pod, options, host_memory=1059)
    assert info.value.message.startswith("config.linux.resources.memory_limit_in_bytes:")
    assert "1060 MiB" in info.value.message


def test_the_largest_limit_the_edge_lets_through_is_refused_here() -> None:
    with pytest.raises(InvalidArgument):
        size_vm([], Resources(memory_limit_in_bytes=1 << 52), VmOptions())


def test_more_vcpus_than_qemu_takes_are_refused_with_the_field() -> None:
    options = VmOptions(overhead_vcpus=1)
    ok = Resources(cpu_quota=(MAX_VCPUS - 1) * 100000, cpu_period=100000)
    assert size_vm([], ok, options, host_memory=1 << 20)[1] == MAX_VCPUS
    huge = Resources(cpu_quota=(1 << 44) - 1, cpu_period=1000)
    with pytest.raises(InvalidArgument) as info:
        size_vm([], huge, options, host_memory=1 << 20)
    assert info.value.message.startswith("config.linux.resources.cpu_quota:")


def test_host_memory_is_this_hosts_memtotal() -> None:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        first = meminfo.readline().split()
    assert first[0] == "MemTotal:"
    assert host_memory_mib() == int(first[1]) // 1024
