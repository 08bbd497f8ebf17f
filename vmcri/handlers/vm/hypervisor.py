"""The hypervisor seam: a Protocol, and its libvirt implementation.

Domains are transient (``createXML``): a VM exists only while it runs, so a
crash or a poweroff leaves no definition behind to clean up. libvirt's event
loop runs on its own thread and reports domain deaths to a callback, so a VM
killed from outside marks its sandbox NOTREADY without waiting for a poll.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from xml.etree import ElementTree

from vmcri.checkpoint.deadline import Deadline
from vmcri.errors import DeadlineExceeded, HypervisorError
from vmcri.handlers.vm.snapshot import LibvirtMonitor, load_stream

log = logging.getLogger(__name__)

DeathCallback = Callable[[str, str], None]  # (domain name, reason)
# Called with QEMU's pid once its process exists and before the guest runs (a cold boot
# starts paused; a restore has not loaded its state): it may place the process. What it
# raises is raised after the domain is destroyed.
BeforeRun = Callable[[int], None]
SYSTEM_URI = "qemu:///system"
STREAM_FD_NAME = "vmcri-stream"  # the migration stream's pipe, as QEMU knows it (getfd)
QEMU_RUN_DIR = Path("/run/libvirt/qemu")  # libvirt's qemu:///system state: <name>.pid


class Hypervisor(Protocol):
    def start(self, name: str, xml: str, before_run: BeforeRun | None = None) -> None:
        """Create and boot a transient domain; raises HypervisorError."""
        ...

    def qemu_pid(self, name: str) -> int:
        """The running domain's QEMU process; raises HypervisorError."""
        ...

    def is_running(self, name: str) -> bool: ...

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI); a missing domain is success."""
        ...

    def destroy(self, name: str) -> None:
        """Pull the plug; a missing domain is success."""
        ...

    def names(self, prefix: str) -> list[str]:
        """The running domains whose names start with ``prefix``."""
        ...

    def version(self) -> str:
        """The hypervisor's version (a saved state restores only into the same one)."""
        ...

    def save_state(self, name: str, target: Path, timeout_s: float) -> None:
        """Stop the domain and write its device state (not its file-backed RAM) to
        ``target``, through a pipe handed to QEMU; raises HypervisorError."""
        ...

    def restore(
        self,
        name: str,
        xml: str,
        state: Path,
        timeout_s: float,
        before_run: BeforeRun | None = None,
    ) -> None:
        """Create a domain from ``xml`` (which waits for an incoming state) and load the
        device state from ``state`` through a pipe handed to QEMU; on any failure nothing
        is left running. Raises HypervisorError."""
        ...

    def attach_device(self, name: str, xml: str) -> None:
        """Hotplug a device into the running domain; raises HypervisorError."""
        ...

    def pause(self, name: str) -> None:
        """Stop the domain's vCPUs (it stays, holding its memory); raises HypervisorError."""
        ...

    def resume(self, name: str) -> None:
        """Run a paused domain's vCPUs again; raises HypervisorError."""
        ...

    def disks(self, name: str) -> dict[str, int]:
        """The running domain's SCSI disks: each one's host file and its unit (LUN).
        Raises HypervisorError."""
        ...

    def set_vcpus(self, name: str, count: int) -> None:
        """Plug (or unplug) vCPUs of the running domain to ``count``, at most its maximum;
        the guest must still online a new one. Raises HypervisorError."""
        ...

    def plug_memory(self, name: str, device: str, size_bytes: int, timeout_s: float) -> int:
        """Ask the virtio-mem ``device`` for ``size_bytes`` and wait up to ``timeout_s`` for
        the guest to plug them; returns what is plugged then (the guest decides: it may take
        less, or nothing). Raises HypervisorError."""
        ...

    def mount_namespace(self, name: str) -> str:
        """The mount namespace the running domain's QEMU is in (``mnt:[inode]``, as
        ``/proc/<pid>/ns/mnt`` reads), or "" when that cannot be known."""
        ...


_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop(libvirt: Any) -> None:
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LibvirtHypervisor:
    """Hypervisor on a libvirt connection (``qemu:///system`` by default)."""

    def __init__(self, uri: str, on_death: DeathCallback | None = None) -> None:
        self._uri = uri
        self._on_death = on_death
        self._conn: Any = None
        self._lock = threading.Lock()
        # QMP (with descriptors: a migration stream's pipe) as pod checkpoints send it,
        # over this connection.
        self._monitor = LibvirtMonitor(uri, self._connection)

    def _connection(self) -> Any:
        import libvirt

        with self._lock:
            if self._conn is not None and self._conn.isAlive():
                return self._conn
            _start_event_loop(libvirt)
            try:
                conn = libvirt.open(self._uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(
                    f"cannot connect to libvirt at {self._uri}: {exc.get_error_message()} "
                    "(is libvirtd running? scripts/start-services.sh starts it)"
                ) from exc
            conn.setKeepAlive(5, 3)
            if self._on_death is not None:
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                )
            self._conn = conn
            return conn

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        import libvirt

        if event != libvirt.VIR_DOMAIN_EVENT_STOPPED or self._on_death is None:
            return
        reasons = {
            libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
        }
        try:
            self._on_death(dom.name(), reasons.get(detail, f"stopped ({detail})"))
        except Exception:
            log.exception("domain death callback failed")

    def _lookup(self, name: str) -> Any:
        import libvirt

        try:
            return self._connection().lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"libvirt: {exc.get_error_message()}") from exc

    def _running(self, name: str, doing: str) -> Any:
        """The running domain ``name``; raises HypervisorError (cannot ``doing``: not running)."""
        dom = self._lookup(name)
        if dom is None:
            raise HypervisorError(f"cannot {doing}: it is not running")
        return dom

    def start(self, name: str, xml: str, before_run: BeforeRun | None = None) -> None:
        import libvirt

        flags = libvirt.VIR_DOMAIN_START_PAUSED if before_run is not None else 0
        try:
            dom = self._connection().createXML(xml, flags)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot start VM {name}: {exc.get_error_message()}") from exc
        if before_run is None:
            return
        try:
            before_run(self.qemu_pid(name))
            dom.resume()
        except BaseException as exc:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            if isinstance(exc, libvirt.libvirtError):
                raise HypervisorError(f"cannot start VM {name}: {exc.get_error_message()}") from exc
            raise

    def qemu_pid(self, name: str) -> int:
        """From the pid file libvirt has QEMU write, checked against the process's own
        command line (``-name guest=<name>,...``): a stale file names another process."""
        try:
            pid = int((QEMU_RUN_DIR / f"{name}.pid").read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read(1 << 20).split(b"\0")
        except (OSError, ValueError) as exc:
            raise HypervisorError(f"cannot find the QEMU process of VM {name}: {exc}") from exc
        if f"guest={name},".encode() not in {a[: len(name) + 7] for a in argv}:
            raise HypervisorError(f"cannot find the QEMU process of VM {name}: pid {pid} is not")
        return pid

    def is_running(self, name: str) -> bool:
        import libvirt

        dom = self._lookup(name)
        if dom is None:
            return False
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False  # it went away between the lookup and the question
            raise HypervisorError(f"libvirt: {exc.get_error_message()}") from exc

    def shutdown(self, name: str) -> None:
        import libvirt

        dom = self._lookup(name)
        if dom is None:
            return
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _gone_codes(libvirt):
                raise HypervisorError(
                    f"cannot shut down {name}: {exc.get_error_message()}"
                ) from exc

    def destroy(self, name: str) -> None:
        import libvirt

        dom = self._lookup(name)
        if dom is None:
            return
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _gone_codes(libvirt):
                raise HypervisorError(f"cannot destroy {name}: {exc.get_error_message()}") from exc

    def names(self, prefix: str) -> list[str]:
        import libvirt

        try:
            domains = self._connection().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt: {exc.get_error_message()}") from exc
        return [d.name() for d in domains if d.name().startswith(prefix)]

    def version(self) -> str:
        import libvirt

        try:
            conn = self._connection()
            return f"qemu {conn.getVersion()} libvirt {conn.getLibVersion()}"
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt: {exc.get_error_message()}") from exc

    def mount_namespace(self, name: str) -> str:
        # libvirt has no call for QEMU's pid; its system instance writes a pid file.
        if self._uri != SYSTEM_URI:
            return ""
        try:
            return os.readlink(f"/proc/{self.qemu_pid(name)}/ns/mnt")
        except (OSError, HypervisorError):
            return ""

    def _qmp(self, dom: Any, command: str, **arguments: Any) -> Any:
        """One QMP command through libvirt (the domain is then marked custom-monitor)."""
        return self._monitor.qmp_on(dom, command, arguments, [])

    def _ignore_shared(self, dom: Any) -> None:
        # RAM in a shared file is not copied into the stream: only device state is.
        capability = {"capability": "x-ignore-shared", "state": True}
        self._qmp(dom, "migrate-set-capabilities", capabilities=[capability])

    def _wait_migration(self, dom: Any, deadline: float, done: Callable[[Any], bool]) -> None:
        while True:
            status = self._qmp(dom, "query-migrate") or {}
            if status.get("status") in ("failed", "cancelled"):
                raise HypervisorError(
                    f"migration {status.get('status')}: {status.get('error-desc', 'no reason')}"
                )
            if done(status):
                return
            if time.monotonic() > deadline:
                raise HypervisorError(f"migration did not finish: {status.get('status')}")
            time.sleep(0.01)

    def save_state(self, name: str, target: Path, timeout_s: float) -> None:
        dom = self._running(name, f"save VM {name}")
        deadline = time.monotonic() + timeout_s
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        errors: list[BaseException] = []

        def receive() -> None:
            try:
                with os.fdopen(read_fd, "rb", buffering=0) as stream, open(target, "wb") as out:
                    while chunk := stream.read(1 << 20):  # EOF: QEMU closed its end
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        receiver = threading.Thread(target=receive, name="vm-save", daemon=True)
        receiver.start()
        try:
            try:
                self._monitor.pass_fd(name, STREAM_FD_NAME, write_fd)
            finally:
                os.close(write_fd)  # QEMU holds its own copy, which it closes when done
            self._ignore_shared(dom)
            self._qmp(dom, "migrate", uri=f"fd:{STREAM_FD_NAME}")
            self._wait_migration(dom, deadline, lambda s: s.get("status") == "completed")
        finally:  # a failed migration closes QEMU's end too: the reader ends
            receiver.join(max(0.0, deadline - time.monotonic()))
        if receiver.is_alive() or errors:
            raise HypervisorError(f"cannot save VM {name}: {errors[0] if errors else 'timeout'}")

    def restore(
        self,
        name: str,
        xml: str,
        state: Path,
        timeout_s: float,
        before_run: BeforeRun | None = None,
    ) -> None:
        import libvirt

        deadline = time.monotonic() + timeout_s
        try:
            dom = self._connection().createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot start VM {name}: {exc.get_error_message()}") from exc
        try:
            if before_run is not None:
                before_run(self.qemu_pid(name))  # the guest runs once its state is in
            self._ignore_shared(dom)
            with open(state, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                load_stream(self._monitor, name, f.fileno(), size, Deadline.of(deadline))
        except BaseException as exc:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            if isinstance(exc, (OSError, DeadlineExceeded)):  # a template's fault: cold boot
                raise HypervisorError(f"cannot restore VM {name}: {exc}") from exc
            raise

    def attach_device(self, name: str, xml: str) -> None:
        import libvirt

        dom = self._running(name, f"add a device to VM {name}")
        try:
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise HypervisorError(
                f"cannot add a device to {name}: {exc.get_error_message()}"
            ) from exc

    def pause(self, name: str) -> None:
        import libvirt

        try:
            self._running(name, "pause it").suspend()
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot pause {name}: {exc.get_error_message()}") from exc

    def resume(self, name: str) -> None:
        import libvirt

        try:
            self._running(name, "resume it").resume()
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot resume {name}: {exc.get_error_message()}") from exc

    def disks(self, name: str) -> dict[str, int]:
        import libvirt

        dom = self._running(name, f"list the disks of VM {name}")
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"libvirt: {exc.get_error_message()}") from exc
        return scsi_disks(xml)

    def set_vcpus(self, name: str, count: int) -> None:
        import libvirt

        dom = self._running(name, f"set the vCPUs of VM {name}")
        try:
            dom.setVcpusFlags(count, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise HypervisorError(
                f"cannot set {count} vCPUs in {name}: {exc.get_error_message()}"
            ) from exc

    def plug_memory(self, name: str, device: str, size_bytes: int, timeout_s: float) -> int:
        dom = self._running(name, f"resize the memory of VM {name}")
        path = f"/machine/peripheral/{device}"
        self._qmp(dom, "qom-set", path=path, property="requested-size", value=size_bytes)
        deadline = time.monotonic() + timeout_s
        while True:
            plugged = int(self._qmp(dom, "qom-get", path=path, property="size"))
            if plugged == size_bytes or time.monotonic() > deadline:
                return plugged
            time.sleep(0.05)


def scsi_disks(xml: str) -> dict[str, int]:
    """The file and unit of each SCSI disk in a domain's XML (libvirt's, never a guest's)."""
    found: dict[str, int] = {}
    for disk in ElementTree.fromstring(xml).iterfind("./devices/disk"):
        source = disk.find("source")
        address = disk.find("address")
        target = disk.find("target")
        if source is None or address is None or target is None:
            continue
        if target.get("bus") != "scsi" or address.get("type") != "drive":
            continue
        found[source.get("file", "")] = int(address.get("unit", "-1"))
    return found


def _gone_codes(libvirt: Any) -> tuple[int, ...]:
    """libvirt error codes that mean the domain is already gone or already stopped."""
    return (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
