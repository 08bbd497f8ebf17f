"""The VM backend's own logic with fakes at its seams (libvirt, mounts); no VM boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cgroups import FAKE_QEMU_PID, FakePodCgroups
from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import busybox_container, make_backend, sandbox
from vmcri.agent.types import AgentInfo, SandboxFiles
from vmcri.errors import FailedPrecondition, HypervisorError, InvalidArgument
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.hypervisor import BeforeRun
from vmcri.ids import new_id
from vmcri.model import ImageInfo, Resources
from vmcri.store.records import ContainerState, SandboxState


def test_a_vm_that_cannot_start_leaves_nothing(short_tmp: Path) -> None:
    tmp_path = short_tmp
    hypervisor = FakeHypervisor(fail_start=True)
    backend, _ = make_backend(tmp_path, hypervisor)
    record = sandbox()
    with pytest.raises(HypervisorError, match="cannot start"):
        backend.run_sandbox(record)
    state = tmp_path / "state" / "backends" / "vm"
    assert not (state / record.id).exists()
    assert not (tmp_path / "root" / "backends" / "vm" / record.id).exists()
    assert list((state / "sockets").iterdir()) == []
    assert hypervisor.destroyed == [domain_name(record.id)]
    assert "<domain type='qemu' " in hypervisor.started_xml  # TCG, as forced


def test_a_vm_dying_marks_its_containers_exited(tmp_path: Path) -> None:
    hypervisor = FakeHypervisor()
    backend, store = make_backend(tmp_path, hypervisor)
    record = store.sandboxes.add(sandbox())
    record = store.sandboxes.set_fields(record.id, state=SandboxState.READY)
    container = store.containers.add(busybox_container(record.id))
    (tmp_path / "state" / "backends" / "vm" / record.id / "exits").mkdir(parents=True)
    assert not backend.sandbox_alive(record)

    backend._on_domain_death(domain_name(record.id), "crashed")

    assert not backend.supervisor.liveness(record, container).running
    # The exit travelled up with its code and reason, and is folded into the record.
    folded = store.containers.get(container.id)
    assert folded.state is ContainerState.EXITED
    assert folded.exit_code == 137 and "crashed" in folded.message
    kept = backend.supervisor.recorded_exit(record, container.id)
    assert kept is not None and kept.exit_code == 137 and "crashed" in kept.message
    # A second death notice (libvirt may repeat itself) keeps the first record.
    backend._on_domain_death(domain_name(record.id), "destroyed")
    again = backend.supervisor.recorded_exit(record, container.id)
    assert again is not None and "crashed" in again.message
    assert "crashed" in store.containers.get(container.id).message


def test_foreign_domains_are_ignored(tmp_path: Path) -> None:
    backend, store = make_backend(tmp_path, FakeHypervisor())
    record = store.sandboxes.add(sandbox())
    record = store.sandboxes.set_fields(record.id, state=SandboxState.READY)
    container = store.containers.add(busybox_container(record.id))
    exits = tmp_path / "state" / "backends" / "vm" / record.id / "exits"
    exits.mkdir(parents=True)

    unknown = new_id()
    backend._on_domain_death("some-other-vm", "destroyed")  # not ours at all
    backend._on_domain_death(domain_name(unknown), "destroyed")  # ours, but no such pod

    assert list(exits.iterdir()) == []  # no exit recorded for the pod that still runs
    assert not (tmp_path / "state" / "backends" / "vm" / unknown).exists()
    assert store.containers.get(container.id) == container


def test_a_vm_of_another_vm_handler_dying_leaves_this_handlers_dir_alone(tmp_path: Path) -> None:
    # Every vm backend hears of every libvirt domain; each handler has a state dir of its own.
    backend, store = make_backend(tmp_path, FakeHypervisor())
    other = store.sandboxes.add(sandbox())
    store.containers.add(busybox_container(other.id))
    backend._on_domain_death(domain_name(other.id), "crashed")
    assert not (tmp_path / "state" / "backends" / "vm" / other.id).exists()


def test_a_state_dir_too_deep_for_sockets_is_refused_up_front(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    hypervisor = FakeHypervisor()
    backend, _ = make_backend(deep, hypervisor)
    with pytest.raises(FailedPrecondition, match="too deep"):
        backend.run_sandbox(sandbox())
    assert hypervisor.started_xml == ""


class RefusingRestores(FakeHypervisor):
    """libvirt refuses every restore (e.g. a state of another QEMU); cold boots fail too."""

    def __init__(self) -> None:
        super().__init__(fail_start=True)
        self.restores: list[str] = []

    def names(self, prefix: str) -> list[str]:
        return []

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
        self.restores.append(xml)
        raise HypervisorError("QMP migrate-incoming: load of migration failed")


def test_a_refused_restore_falls_back_to_a_cold_boot_and_drops_the_template(
    short_tmp: Path,
) -> None:
    from vmcri.handlers.vm.template import MIB, Templates, TemplateStore

    hypervisor = RefusingRestores()
    backend, _ = make_backend(short_tmp, hypervisor)
    store = TemplateStore(short_tmp / "templates")
    backend._templates = Templates(store, lambda shape, staging: None)
    guest = backend._guest()
    shape = backend._shape(guest, 416, 1)

    def build(shape_: object, staging: Path) -> None:
        with open(staging / "memory", "wb") as f:
            f.truncate(416 * MIB)
        (staging / "state").write_bytes(b"QEVM")

    assert Templates(store, build).ensure(shape) is not None
    record = sandbox()
    with pytest.raises(HypervisorError, match="cannot start"):  # the cold boot's own error
        backend.run_sandbox(record)
    assert len(hypervisor.restores) == 1
    assert "share=off" in hypervisor.restores[0] and "-incoming" in hypervisor.restores[0]
    assert "<domain type='qemu' " in hypervisor.started_xml  # then a plain cold boot
    assert "-incoming" not in hypervisor.started_xml
    assert not store.path(shape).exists()  # the template that failed is gone
    state = short_tmp / "state" / "backends" / "vm"
    assert list((state / "sockets").iterdir()) == []
    assert not (state / record.id).exists()
    assert hypervisor.destroyed.count(domain_name(record.id)) >= 2


def test_a_container_limit_the_vm_cannot_give_is_refused_naming_the_field(tmp_path: Path) -> None:
    backend, store = make_backend(tmp_path, FakeHypervisor())
    record = store.sandboxes.add(sandbox())
    record = store.sandboxes.set_fields(
        record.id, state=SandboxState.READY, runtime={"memory_mib": "416", "vcpus": "1"}
    )
    container = busybox_container(record.id, Resources(memory_limit_in_bytes=1 << 30))
    image = ImageInfo(id="sha256:1", name="b", layer_dirs=(str(tmp_path),), config={})
    with pytest.raises(InvalidArgument, match=r"config\.linux\.resources\.memory_limit_in_bytes"):
        backend.create_container(record, container, image)
    with pytest.raises(InvalidArgument, match=r"linux\.cpu_quota"):
        backend.update_resources(record, container, Resources(cpu_quota=400000, cpu_period=100000))


def test_a_stalled_call_names_the_end_of_the_guest_console_and_only_the_end(
    tmp_path: Path,
) -> None:
    backend, _ = make_backend(tmp_path, FakeHypervisor())
    record = sandbox()
    assert backend.stall_hint(record.id) == ""  # no console yet: nothing to add
    console = tmp_path / "state" / "backends" / "vm" / record.id / "console.log"
    console.parent.mkdir(parents=True)
    # The guest writes what it likes: megabytes, binary, line breaks
    console.write_bytes(b"\xff\x00\x1b[2Jjunk\n" * 2_000_000 + b"rcu: INFO: rcu_sched stall\r\n")
    hint = backend.stall_hint(record.id)
    assert hint.startswith("guest console ends with: ")
    assert hint.endswith("rcu: INFO: rcu_sched stall")
    assert len(hint) <= len("guest console ends with: ") + 600
    assert hint.isprintable()  # no line breaks, NULs or terminal escapes


class ReadyLink:
    """An agent link whose guest answers at once (agent of the fake image "abc123")."""

    class Client:
        def setup_sandbox(self, **_: object) -> SandboxFiles:
            return SandboxFiles("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")

    client = Client()

    def wait_ready(self, timeout_s: float, alive: object) -> AgentInfo:
        return AgentInfo("1+abc123", 1, 0, 0, 0)


def test_a_pod_vm_is_placed_before_it_runs_and_its_cgroup_goes_with_it(short_tmp: Path) -> None:
    cgroups = FakePodCgroups()
    backend, store = make_backend(short_tmp, FakeHypervisor(), cgroups=cgroups)
    record = store.sandboxes.add(sandbox())
    backend.supervisor.link = lambda sandbox: ReadyLink()  # type: ignore[method-assign,assignment,return-value]
    started = backend.run_sandbox(record)
    # the cgroup is made for the VM's most memory, QEMU placed (the fake calls before_run
    # before it marks the domain running), and the record keeps where
    assert cgroups.calls == ["prepare 4000", f"place {FAKE_QEMU_PID}"]
    assert started.runtime["cgroup"] == f"/vmcri/{record.id}/vmcri-{record.id}"
    record = store.sandboxes.set_fields(record.id, state=SandboxState.READY)
    record = store.sandboxes.set_fields(record.id, runtime=started.runtime)
    # a restarted daemon places it again, once
    (short_tmp / "again").mkdir()
    restarted, _ = make_backend(short_tmp / "again", FakeHypervisor(), cgroups=cgroups)
    restarted._hypervisor.running.add(domain_name(record.id))  # type: ignore[attr-defined]
    restarted.supervisor.reconnect = lambda sandbox: None  # type: ignore[method-assign]
    assert restarted.sandbox_alive(record) and restarted.sandbox_alive(record)
    assert cgroups.calls[2:] == [f"place {FAKE_QEMU_PID}"]
    restarted.remove_sandbox(record)
    assert cgroups.calls[-1] == "remove" and cgroups.live == set()


def test_a_vm_that_cannot_start_leaves_no_cgroup(short_tmp: Path) -> None:
    cgroups = FakePodCgroups()
    backend, _ = make_backend(short_tmp, FakeHypervisor(fail_start=True), cgroups=cgroups)
    with pytest.raises(HypervisorError):
        backend.run_sandbox(sandbox())
    assert cgroups.calls[0].startswith("prepare") and cgroups.calls[-1] == "remove"
    assert cgroups.live == set()
