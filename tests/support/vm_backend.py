"""A vm backend as the daemon makes it, with fakes at its seams (libvirt, mounts, taps,
cgroups), and the records of a pod and a container for it; no VM boots."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.cgroups import FakePodCgroups
from tests.support.hypervisor import FakeHypervisor
from tests.support.mounter import FakeMounter
from tests.support.taps import NoTaps
from vmcri.config import Config
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.vm.backend import VmBackend
from vmcri.handlers.vm.options import VmOptions
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, Metadata, PodConfig, Resources
from vmcri.network.tap import TapDevices
from vmcri.runtime.backend_records import BackendRecords
from vmcri.runtime.events import EventBus
from vmcri.runtime.exits import ContainerExits
from vmcri.store.pod_network import PodNetwork
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store


def vm_context(tmp: Path, store: Store) -> BackendContext:
    """What the daemon gives the vm backend, with its dirs below ``tmp`` as the daemon lays them."""
    return BackendContext(
        config=Config(),
        root=tmp / "root" / "backends" / "vm",
        state=tmp / "state" / "backends" / "vm",
        services=BackendRecords(store, ContainerExits(store, EventBus(), time.time_ns)),
    )


def make_backend(
    tmp: Path,
    hypervisor: FakeHypervisor,
    taps: TapDevices | None = None,
    cgroups: FakePodCgroups | None = None,
) -> tuple[VmBackend, Store]:
    guest = tmp / "guest"
    guest.mkdir()
    for name in ("vmlinuz", "initrd.img", "rootfs.img"):
        (guest / name).write_bytes(b"x")
    (guest / "VERSION").write_text("abc123\n")
    store = Store(tmp / "root")
    context = vm_context(tmp, store)
    options = VmOptions(
        guest_dir=str(guest), accel="tcg", shared_fs="9p", boot_timeout_s=1, template="off"
    )
    backend = VmBackend(
        options,
        context,
        hypervisor=hypervisor,
        mounter=FakeMounter(),
        taps=taps or NoTaps(),
        cgroups=cgroups or FakePodCgroups(),
    )
    return backend, store


def sandbox(network: PodNetwork | None = None) -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
    return SandboxRecord(id=new_id(), handler="vm", backend="vm", config=config, network=network)


def busybox_container(sandbox_id: str, resources: Resources | None = None) -> ContainerRecord:
    config = ContainerConfig(
        metadata=Metadata(name="c"), image="busybox", resources=resources or Resources()
    )
    return ContainerRecord(
        id=new_id(), sandbox_id=sandbox_id, config=config, image_id="sha256:1", image_name="busybox"
    )
