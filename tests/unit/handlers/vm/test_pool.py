"""The warm pool's bookkeeping and refill (``pool.py``) with fake VMs and a fake clock."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import make_backend
from vmcri.errors import ConfigError, HypervisorError
from vmcri.handlers.vm import pool as pool_module
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.pool import PoolHooks, PoolVm, VmPool
from vmcri.handlers.vm.pool_vms import POOL_FILE, pool_vms_on_disk
from vmcri.model import Metadata, PodConfig

SHAPE = "shape-a"


@dataclass
class FakeVms:
    """Makes numbered VMs; remembers what was destroyed; a VM is usable unless said."""

    now: float = 100.0
    ready: bool = True
    fail: bool = False
    made: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    dead: set[str] = field(default_factory=set)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def make(self, shape: str) -> PoolVm:
        if self.fail:
            raise HypervisorError("cannot start VM: no")
        vm = PoolVm(f"vm{next(self.counter)}", shape, 416)
        self.made.append(vm.id)
        return vm

    def hooks(self) -> PoolHooks:
        return PoolHooks(
            make=self.make,
            destroy=lambda vm: self.destroyed.append(vm.id),
            usable=lambda vm: vm.id not in self.dead,
            ready=lambda shape: self.ready,
            clock=lambda: self.now,
        )


def filled(size: int = 2) -> tuple[VmPool, FakeVms]:
    vms = FakeVms()
    pool = VmPool(size, vms.hooks())
    pool.want(SHAPE)
    while pool.step():
        pass
    return pool, vms


def test_the_pool_fills_each_wanted_shape_one_vm_at_a_time_up_to_its_size() -> None:
    pool, vms = filled(2)
    assert vms.made == ["vm0", "vm1"]
    assert not pool.step()  # full
    pool.want("shape-b")
    assert pool.step() and pool.idle()[-1].shape == "shape-b"


def test_a_claimed_vm_goes_to_the_pod_of_its_id_once() -> None:
    pool, _ = filled(2)
    claimed = pool.claim(SHAPE)
    assert claimed in {"vm0", "vm1"}
    other = pool.claim(SHAPE)
    assert other is not None and other != claimed  # never the same VM twice
    assert pool.claim(SHAPE) is None  # empty: the pod gets a fresh ID
    assert pool.claim("shape-b") is None
    vm = pool.take(claimed)
    assert vm is not None and vm.id == claimed
    assert pool.take(claimed) is None
    assert pool.take("vm-unknown") is None


def test_an_unclaimed_vm_cannot_be_taken() -> None:
    pool, _ = filled(1)
    assert pool.take("vm0") is None  # a record with its ID but no claim: not the pool's pod


def test_no_refill_while_a_pod_starts_nor_just_after() -> None:
    pool, vms = filled(1)
    sandbox_id = pool.claim(SHAPE)
    assert sandbox_id is not None
    pool.begin(sandbox_id)
    assert pool.take(sandbox_id) is not None
    assert not pool.step()  # a RunPodSandbox in flight
    pool.end(sandbox_id)
    assert not pool.step()  # its first containers are being made
    vms.now += pool_module.QUIET_S
    assert pool.step() and vms.made == ["vm0", "vm1"]


def test_a_start_that_never_ends_stops_blocking_refills_after_a_while() -> None:
    pool, vms = filled(1)
    pool.take(pool.claim(SHAPE) or "")
    pool.begin("lost")  # its name was taken: no run_sandbox, no end
    vms.now += pool_module.START_TTL_S - 1
    assert not pool.step()
    vms.now += 2
    assert pool.step()


def test_dead_or_stale_idle_vms_are_discarded_and_replaced() -> None:
    pool, vms = filled(2)
    vms.dead.add("vm0")
    assert pool.step()  # swept, then one made
    assert vms.destroyed == ["vm0"]
    assert sorted(vm.id for vm in pool.idle()) == ["vm1", "vm2"]
    assert pool.lost("vm1") and vms.destroyed == ["vm0", "vm1"]
    assert not pool.lost("vm1")  # once


def test_a_claim_no_pod_takes_expires() -> None:
    pool, vms = filled(1)
    assert pool.claim(SHAPE) == "vm0"
    vms.dead.add("vm0")  # a claimed VM is not checked: its pod may be taking it
    pool.step()
    assert vms.destroyed == []
    vms.now += pool_module.CLAIM_TTL_S + 1
    pool.step()
    assert vms.destroyed == ["vm0"]
    assert pool.take("vm0") is None


def test_a_shape_without_a_template_or_that_fails_is_retried_later() -> None:
    vms = FakeVms(ready=False)
    pool = VmPool(1, vms.hooks())
    pool.want(SHAPE)
    assert not pool.step() and vms.made == []
    vms.ready = True
    assert not pool.step()  # not before the short retry
    vms.now += pool_module.NOT_READY_RETRY_S
    vms.fail = True
    assert not pool.step()
    vms.fail = False
    vms.now += pool_module.NOT_READY_RETRY_S
    assert not pool.step()  # a failed make waits longer
    vms.now += pool_module.RETRY_AFTER_S
    assert pool.step()


def test_stop_destroys_every_vm_and_size_zero_makes_none() -> None:
    pool, vms = filled(2)
    pool.stop()
    assert sorted(vms.destroyed) == ["vm0", "vm1"] and pool.idle() == []
    assert not pool.step()
    empty = VmPool(0, FakeVms().hooks())
    empty.want(SHAPE)
    assert not empty.step() and empty.claim(SHAPE) is None


def test_pool_size_is_bounded() -> None:
    assert VmOptions().pool_size == 0
    with pytest.raises(ConfigError, match="pool_size"):
        VmOptions(pool_size=-1)
    with pytest.raises(ConfigError, match="pool_size"):
        VmOptions(pool_size=65)


def test_without_a_pool_each_pod_gets_a_fresh_id(tmp_path: Path) -> None:
    backend, _ = make_backend(tmp_path, FakeHypervisor())  # templates off: no pool
    config = PodConfig(Metadata("p"))
    first, second = backend.new_sandbox_id(config), backend.new_sandbox_id(config)
    assert first != second and len(first) == 64


def test_pool_markers_on_disk_are_read_bounded_and_anything_else_is_skipped(
    tmp_path: Path,
) -> None:
    good = "a" * 64
    (tmp_path / good).mkdir()
    (tmp_path / good / POOL_FILE).write_text(
        json.dumps(
            {"memory_mib": 416, "placement": {"cgroup": "/p/l", "cgroup_pod": "/p"}, "idle": True}
        )
    )
    (tmp_path / ("b" * 64)).mkdir()  # a pod's dir: no marker
    (tmp_path / ("c" * 64)).mkdir()
    (tmp_path / ("c" * 64) / POOL_FILE).write_text("[not json")
    (tmp_path / "templates").mkdir()
    [vm] = pool_vms_on_disk(tmp_path)
    assert vm.sandbox_id == good and vm.memory_mib == 416 and vm.idle
    assert vm.placement is not None and vm.placement.leaf == "/p/l"
    assert pool_vms_on_disk(tmp_path / "missing") == []


def test_doctor_and_metrics_show_the_pool_and_its_memory(tmp_path: Path) -> None:
    from vmcri.doctor.model import Status
    from vmcri.doctor.pool_checks import check_pool
    from vmcri.handlers.vm.pool_metrics import PoolCollector

    handler = tmp_path / "vm"
    for n, idle in ((1, True), (2, False)):
        (handler / (str(n) * 64)).mkdir(parents=True)
        (handler / (str(n) * 64) / POOL_FILE).write_text(
            json.dumps({"memory_mib": 416, "idle": idle})
        )
    check = check_pool("vm", 2, "auto", tmp_path)
    assert check.status is Status.OK and "1 idle" in check.found and "832 MiB" in check.found
    assert check_pool("vm", 0, "auto", tmp_path).status is Status.INFO
    assert check_pool("vm", 2, "off", tmp_path).status is Status.DEGRADED
    families = {f.name: f for f in PoolCollector(tmp_path, ["vm"]).collect()}
    samples = {
        (s.name, tuple(s.labels.values())): s.value for f in families.values() for s in f.samples
    }
    assert samples[("vmcri_vm_pool_vms", ("vm", "idle"))] == 1
    assert samples[("vmcri_vm_pool_vms", ("vm", "making"))] == 1
    assert samples[("vmcri_vm_pool_memory_bytes", ("vm",))] == 832 << 20
