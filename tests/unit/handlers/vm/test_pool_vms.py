"""The backend's pool VMs (``pool_vms.py``) with fakes at its seams: made, taken over by
the pod of their ID, lost, and left by an earlier daemon run. No VM boots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.support.cgroups import FAKE_QEMU_PID, FakePodCgroups
from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import make_backend, sandbox
from vmcri.agent.types import AgentInfo, SandboxFiles
from vmcri.handlers.vm.backend import VmBackend
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.hypervisor import BeforeRun
from vmcri.handlers.vm.pool import PoolHooks, VmPool
from vmcri.handlers.vm.pool_vms import POOL_FILE, pool_vms_on_disk
from vmcri.handlers.vm.template import MIB, Templates, TemplateStore
from vmcri.store.store import Store


class Restoring(FakeHypervisor):
    """libvirt that restores (the guest runs at once) and pauses."""

    def version(self) -> str:
        return "fake 1"

    def restore(
        self,
        name: str,
        xml: str,
        state: Path,
        timeout_s: float,
        before_run: BeforeRun | None = None,
    ) -> None:
        if before_run is not None:
            before_run(FAKE_QEMU_PID)
        self.running.add(name)


class Agent:
    """A guest agent that answers at once; remembers each SetupSandbox."""

    def __init__(self) -> None:
        self.setups: list[dict[str, object]] = []
        self.client = self
        self.image = "abc123"  # the guest image it comes from

    def setup_sandbox(self, **fields: object) -> SandboxFiles:
        self.setups.append(fields)
        return SandboxFiles("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/pidns")

    def wait_ready(self, timeout_s: float, alive: object) -> AgentInfo:
        return AgentInfo(f"1+{self.image}", 1, 0, 0, 0)


def pooled_backend(tmp: Path) -> tuple[VmBackend, Store, Restoring, FakePodCgroups, Agent]:
    hypervisor, cgroups, agent = Restoring(), FakePodCgroups(), Agent()
    backend, store = make_backend(tmp, hypervisor, cgroups=cgroups)
    templates = TemplateStore(tmp / "templates")

    def build(shape: object, staging: Path) -> None:
        with open(staging / "memory", "wb") as f:
            f.truncate(416 * MIB)
        (staging / "state").write_bytes(b"QEVM")

    backend._templates = Templates(templates, build)
    assert backend._templates.ensure(backend._shape(backend._guest(), 416, 1)) is not None
    backend.supervisor.link = lambda sandbox: agent  # type: ignore[method-assign,assignment,return-value]
    backend._pool_shapes = {}
    backend._pool_making = ""
    backend._pool = VmPool(
        1,
        PoolHooks(
            backend._make_pool_vm,
            backend._destroy_pool_vm,
            backend._pool_vm_usable,
            backend._pool_ready,
        ),
    )
    backend._pool.want(backend._pool_shape(416, 1, False))
    return backend, store, hypervisor, cgroups, agent


def test_a_pool_vm_is_made_paused_and_marked_then_its_pod_takes_it_over(short_tmp: Path) -> None:
    backend, store, hypervisor, cgroups, agent = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [vm] = backend._pool.idle()
    name = domain_name(vm.id)
    assert name in hypervisor.paused
    root = short_tmp / "root" / "backends" / "vm"
    marker = json.loads((root / vm.id / POOL_FILE).read_text())
    assert marker["idle"] is True and marker["memory_mib"] == 416
    # At the least CPU weight from before its guest ran; its disk and PID namespace made,
    # and nothing of a pod.
    assert cgroups.calls[:3] == ["prepare 4000", "least", f"place {FAKE_QEMU_PID}"]
    assert agent.setups == [{"writable_lun": 0, "share_pid": True}]

    pod = sandbox()
    pod = dataclasses.replace(pod, config=dataclasses.replace(pod.config, hostname="web"))
    record = store.sandboxes.add(dataclasses.replace(pod, id=backend.new_sandbox_id(pod.config)))
    assert record.id == vm.id  # the pod has the pool VM's ID: nothing to rename
    assert backend.new_sandbox_id(record.config) != vm.id  # claimed once
    started = backend.run_sandbox(record)
    assert started.runtime["start"] == "pooled"
    assert name not in hypervisor.paused and name in hypervisor.running
    assert not (root / vm.id / POOL_FILE).exists()
    # QEMU placed in the pod's cgroup (here vmcri's own of that ID: default weight back)
    assert cgroups.calls[3:] == ["prepare 4000", f"place {FAKE_QEMU_PID}", "default"]
    setup = agent.setups[-1]
    assert setup["hostname"] == "web" and len(setup["entropy"]) == 64  # type: ignore[arg-type]
    assert setup["wall_clock_ns"]
    assert backend._pool.idle() == []
    backend.remove_sandbox(record)
    assert not (root / vm.id).exists() and name not in hypervisor.running


def test_an_idle_pool_vm_that_dies_goes_with_everything_it_had(short_tmp: Path) -> None:
    backend, _, hypervisor, cgroups, _ = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [vm] = backend._pool.idle()
    hypervisor.running.discard(domain_name(vm.id))
    backend._on_domain_death(domain_name(vm.id), "crashed")
    assert backend._pool.idle() == []
    assert not (short_tmp / "root" / "backends" / "vm" / vm.id).exists()
    assert not (short_tmp / "state" / "backends" / "vm" / vm.id).exists()
    assert cgroups.live == set()


def test_pool_vms_an_earlier_daemon_left_are_destroyed_at_start(short_tmp: Path) -> None:
    backend, _, hypervisor, cgroups, _ = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [vm] = backend._pool.idle()
    (short_tmp / "again").mkdir()
    # A new daemon run over the same dirs (the first one was killed).
    restarted, _ = make_backend(short_tmp / "again", hypervisor, cgroups=cgroups)
    restarted._context = dataclasses.replace(
        restarted._context, root=backend._context.root, state=backend._context.state
    )
    restarted._state = backend._state
    restarted._destroy_left_pool_vms()
    assert domain_name(vm.id) not in hypervisor.running
    assert not (backend._context.root / vm.id).exists()
    assert not (backend._state / vm.id).exists()
    assert cgroups.calls[-1] == "remove" and cgroups.live == set()


def test_a_pod_restored_from_a_checkpoint_does_not_keep_its_claimed_pool_vm(
    short_tmp: Path,
) -> None:
    backend, _, hypervisor, _, _ = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [vm] = backend._pool.idle()
    assert backend.new_sandbox_id(sandbox().config) == vm.id
    assert backend._pool_take(vm.id, usable=False) is None
    assert domain_name(vm.id) not in hypervisor.running
    assert not (backend._context.root / vm.id).exists()


def test_an_idle_pool_vm_of_an_older_guest_image_is_discarded_and_replaced(
    short_tmp: Path,
) -> None:
    backend, _, hypervisor, _, agent = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [old] = backend._pool.idle()
    (short_tmp / "guest" / "VERSION").write_text("def456\n")  # a new guest image
    agent.image = "def456"
    assert not backend._pool.step()  # discarded; the shape is replaced by the new one
    assert backend._pool.idle() == []
    assert domain_name(old.id) not in hypervisor.running
    assert not (backend._context.root / old.id).exists()
    assert backend._templates is not None
    backend._templates.ensure(backend._shape(backend._guest(), 416, 1))  # its template
    assert backend._pool.step()  # made at once (the new shape waits for no retry)
    [new] = backend._pool.idle()
    assert new.shape != old.shape


def test_a_pool_vm_whose_cgroup_outlives_it_leaves_a_marker_for_the_next_start(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmcri.handlers.vm import placement

    monkeypatch.setattr(placement, "wait_until", lambda *args: False)  # no 5 s wait here
    backend, _, hypervisor, cgroups, _ = pooled_backend(short_tmp)
    assert backend._pool is not None and backend._pool.step()
    [vm] = backend._pool.idle()
    cgroups.remove = lambda placement: False  # type: ignore[method-assign]  # QEMU exiting
    backend._destroy_pool_vm(vm)
    assert domain_name(vm.id) not in hypervisor.running
    [left] = pool_vms_on_disk(backend._context.root)
    assert left.sandbox_id == vm.id and left.placement is not None and not left.idle
    assert not (backend._state / vm.id).exists()
