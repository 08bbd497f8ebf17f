"""``FakeHypervisor``: libvirt without VMs, for the vm backend's tests in every tier."""

from __future__ import annotations

from pathlib import Path

from tests.support.cgroups import FAKE_QEMU_PID
from vmcri.errors import HypervisorError
from vmcri.handlers.vm.hypervisor import BeforeRun, scsi_disks


class FakeHypervisor:
    """libvirt without VMs; a guest that takes what is hotplugged up to ``guest_takes_mib``."""

    def __init__(self, fail_start: bool = False) -> None:
        self.fail_start = fail_start
        self.running: set[str] = set()
        self.destroyed: list[str] = []
        self.started_xml = ""
        self.vcpus: dict[str, int] = {}
        self.plugged: dict[str, int] = {}
        self.guest_takes_mib = 1 << 30
        self.attached: dict[str, list[str]] = {}  # domain -> the device XML hotplugged
        self.paused: set[str] = set()

    def start(self, name: str, xml: str, before_run: BeforeRun | None = None) -> None:
        self.started_xml = xml
        if self.fail_start:
            raise HypervisorError(f"cannot start VM {name}: no")
        if before_run is not None:
            before_run(FAKE_QEMU_PID)
        self.running.add(name)

    def qemu_pid(self, name: str) -> int:
        if name not in self.running:
            raise HypervisorError(f"cannot find the QEMU process of VM {name}")
        return FAKE_QEMU_PID

    def is_running(self, name: str) -> bool:
        return name in self.running

    def pause(self, name: str) -> None:
        if name not in self.running:
            raise HypervisorError(f"cannot pause {name}: it is not running")
        self.paused.add(name)

    def resume(self, name: str) -> None:
        if name not in self.running:
            raise HypervisorError(f"cannot resume {name}: it is not running")
        self.paused.discard(name)

    def shutdown(self, name: str) -> None:
        self.running.discard(name)

    def destroy(self, name: str) -> None:
        self.destroyed.append(name)
        self.running.discard(name)

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.running if n.startswith(prefix))

    def version(self) -> str:
        return "fake-1"

    def save_state(self, name: str, target: Path, timeout_s: float) -> None:
        raise HypervisorError("the fake hypervisor saves nothing")

    def restore(
        self,
        name: str,
        xml: str,
        state: Path,
        timeout_s: float,
        before_run: BeforeRun | None = None,
    ) -> None:
        raise HypervisorError("the fake hypervisor restores nothing")

    def attach_device(self, name: str, xml: str) -> None:
        if name not in self.running:
            raise HypervisorError(f"cannot add a device to VM {name}: it is not running")
        if not xml.lstrip().startswith("<disk"):
            raise HypervisorError("the fake hypervisor hotplugs disks only")
        self.attached.setdefault(name, []).append(xml)

    def disks(self, name: str) -> dict[str, int]:
        devices = "".join(self.attached.get(name, []))
        return scsi_disks(f"<domain><devices>{devices}</devices></domain>")

    def set_vcpus(self, name: str, count: int) -> None:
        self.vcpus[name] = count

    def plug_memory(self, name: str, device: str, size_bytes: int, timeout_s: float) -> int:
        self.plugged[name] = min(size_bytes, self.guest_takes_mib << 20)
        return self.plugged[name]

    def mount_namespace(self, name: str) -> str:
        return ""  # unknown: the host's share keeps following
