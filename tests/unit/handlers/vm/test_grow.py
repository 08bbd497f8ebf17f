"""Growing a running VM, fakes at its seams: what is plugged, what is checked, what is undone."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import busybox_container, make_backend, sandbox
from vmcri.agent.types import GuestResources
from vmcri.errors import InvalidArgument, ResourceExhausted
from vmcri.handlers.vm.backend import VmBackend
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.grow import grow
from vmcri.handlers.vm.sizing import MIB, VmSize
from vmcri.model import ImageInfo, Metadata, PodConfig, Resources
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState
from vmcri.store.store import Store

SIZE = VmSize(memory_mib=416, vcpus=1, boot_memory_mib=416, max_memory_mib=2464, max_vcpus=2)
BIGGER = VmSize(memory_mib=762, vcpus=2, boot_memory_mib=416, max_memory_mib=2464, max_vcpus=2)


class FakeGuest:
    """The agent's OnlineResources: onlines up to ``onlines`` CPUs."""

    def __init__(self, onlines: int = 288) -> None:
        self.onlines = onlines
        self.asked: list[int] = []

    def online_resources(self, cpus: int, wait_s: float) -> GuestResources:
        self.asked.append(cpus)
        return GuestResources(online_cpus=min(cpus, self.onlines), memory_total_bytes=700 * MIB)


def test_a_growth_plugs_vcpus_then_memory_then_has_the_guest_online_them() -> None:
    hypervisor, guest = FakeHypervisor(), FakeGuest()
    grow(hypervisor, guest, "vm", SIZE, BIGGER)
    assert hypervisor.vcpus == {"vm": 2}
    assert hypervisor.plugged == {"vm": 346 * MIB}  # the region's part, not the boot RAM
    assert guest.asked == [2]


def test_vcpus_present_from_boot_are_only_onlined() -> None:
    hypervisor, guest = FakeHypervisor(), FakeGuest()
    grow(hypervisor, guest, "vm", SIZE, BIGGER, plug_vcpus=False)  # TCG
    assert hypervisor.vcpus == {} and guest.asked == [2]


def test_memory_the_guest_does_not_take_undoes_the_growth() -> None:
    hypervisor, guest = FakeHypervisor(), FakeGuest()
    hypervisor.guest_takes_mib = 100
    with pytest.raises(ResourceExhausted, match="took 100 of 346 MiB"):
        grow(hypervisor, guest, "vm", SIZE, BIGGER)
    assert hypervisor.vcpus == {"vm": 1} and hypervisor.plugged == {"vm": 0}
    assert guest.asked == []


def test_vcpus_the_guest_does_not_online_undo_the_growth() -> None:
    hypervisor, guest = FakeHypervisor(), FakeGuest(onlines=1)
    with pytest.raises(ResourceExhausted, match="onlined 1 of 2 vCPUs"):
        grow(hypervisor, guest, "vm", SIZE, BIGGER)
    assert hypervisor.vcpus == {"vm": 1} and hypervisor.plugged == {"vm": 0}


def running_pod(
    backend: VmBackend, store: Store, hypervisor: FakeHypervisor, monkeypatch: pytest.MonkeyPatch
) -> tuple[SandboxRecord, FakeGuest]:
    record = store.sandboxes.add(sandbox())
    record = store.sandboxes.set_fields(record.id, state=SandboxState.READY, runtime=SIZE.runtime())
    hypervisor.running.add(domain_name(record.id))
    guest = FakeGuest()
    monkeypatch.setattr(backend._containers, "link", lambda _: SimpleNamespace(client=guest))
    return record, guest


def container(sandbox_id: str, resources: Resources, name: str) -> ContainerRecord:
    record = busybox_container(sandbox_id, resources)
    config = dataclasses.replace(record.config, metadata=Metadata(name=name))
    return dataclasses.replace(record, config=config)


IMAGE = ImageInfo(id="sha256:1", name="b", layer_dirs=("/nonexistent",), config={})


def test_a_container_beyond_the_vm_grows_it_and_the_record_keeps_the_size(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hypervisor = FakeHypervisor()
    backend, store = make_backend(short_tmp, hypervisor)
    record, guest = running_pod(backend, store, hypervisor, monkeypatch)
    # one container already holds 300 MiB; the new one wants 300 MiB and a CPU more
    first = container(record.id, Resources(memory_limit_in_bytes=300 * MIB), "c1")
    store.containers.add(first)
    exited = container(record.id, Resources(memory_limit_in_bytes=1 << 30), "c2")
    store.containers.add(exited)
    store.containers.set_fields(exited.id, state=ContainerState.RUNNING)
    store.containers.set_fields(exited.id, state=ContainerState.EXITED)  # counts for 0
    limits = Resources(memory_limit_in_bytes=300 * MIB, cpu_quota=100000, cpu_period=100000)
    second = store.containers.add(container(record.id, limits, "c3"))
    backend._make_room(record, "config.linux.resources", second)
    grown = VmSize.from_runtime(store.sandboxes.get(record.id).runtime)
    assert grown is not None and (grown.memory_mib, grown.vcpus) == (600 + 160, 2)
    assert hypervisor.vcpus == {} and guest.asked == [2]  # TCG: present, onlined by the agent
    # an update to a limit that still fits changes nothing; the stale record passed in is
    # not trusted: the size comes from the store
    backend._make_room(record, "linux", first, Resources(memory_limit_in_bytes=200 * MIB))
    assert VmSize.from_runtime(store.sandboxes.get(record.id).runtime) == grown
    assert guest.asked == [2]


def test_a_limit_beyond_the_maximum_is_refused_naming_the_field_and_nothing_changes(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hypervisor = FakeHypervisor()
    backend, store = make_backend(short_tmp, hypervisor)
    record, guest = running_pod(backend, store, hypervisor, monkeypatch)
    huge = store.containers.add(
        container(record.id, Resources(memory_limit_in_bytes=4 << 30), "c4")
    )
    with pytest.raises(InvalidArgument, match=r"^config\.linux\.resources\.memory_limit_in_bytes"):
        backend.create_container(record, huge, IMAGE)
    store.containers.remove(huge.id)  # as the container service does when create fails
    many = store.containers.add(container(record.id, Resources(), "c5"))
    with pytest.raises(InvalidArgument, match=r"^linux\.cpu_quota"):
        backend.update_resources(record, many, Resources(cpu_quota=800000, cpu_period=100000))
    with pytest.raises(InvalidArgument, match=r"^resources\.memory_limit_in_bytes"):
        backend.update_sandbox_resources(record, Resources(memory_limit_in_bytes=8 << 30))
    assert store.sandboxes.get(record.id).runtime == SIZE.runtime()
    assert hypervisor.vcpus == {} and hypervisor.plugged == {} and guest.asked == []


def test_new_pod_level_limits_grow_the_vm(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hypervisor = FakeHypervisor()
    backend, store = make_backend(short_tmp, hypervisor)
    record, _ = running_pod(backend, store, hypervisor, monkeypatch)
    backend.update_sandbox_resources(record, Resources(memory_limit_in_bytes=1024 * MIB))
    grown = VmSize.from_runtime(store.sandboxes.get(record.id).runtime)
    assert grown is not None and grown.memory_mib == 1024 + 160


def test_kubelets_overhead_does_not_size_the_vm_but_one_too_small_is_a_warning(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vmcri.handlers.vm.sizing import check_overhead

    backend, _ = make_backend(short_tmp, FakeHypervisor())
    pod = PodConfig(
        metadata=Metadata(name="p", uid="u", namespace="n"),
        overhead=Resources(memory_limit_in_bytes=64 * MIB),
    )
    record = SandboxRecord(id="ab" * 32, handler="vm", backend="vm", config=pod)
    with caplog.at_level(logging.WARNING):
        check_overhead(record, backend._options)
    assert "64 MiB" in caplog.text and "overhead_memory_mib" in caplog.text
    caplog.clear()
    check_overhead(sandbox(), backend._options)  # kubelet sent none (crictl): no warning
    assert caplog.text == ""


def test_each_vcpu_hotplug_is_held_inside_the_guard() -> None:
    # vm/cgroup.py hands QEMU to libvirt's cgroup2 group for a hotplug, then places it again
    hypervisor, guest = FakeHypervisor(), FakeGuest(onlines=1)
    held: list[str] = []

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        held.append(f"in {hypervisor.vcpus.get('vm')}")
        yield
        held.append(f"out {hypervisor.vcpus.get('vm')}")

    with pytest.raises(ResourceExhausted):
        grow(hypervisor, guest, "vm", SIZE, BIGGER, hotplug_guard=guard)
    # plugged to 2 inside it, and taken back to 1 inside it again
    assert held == ["in None", "out 2", "in 2", "out 1"]
