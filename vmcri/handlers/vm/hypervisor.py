"""The hypervisor seam: a Protocol, and its libvirt implementation.

Domains are transient (``createXML``): a VM exists only while it runs, so a
crash or a poweroff leaves no definition behind to clean up. libvirt's event
loop runs on its own thread and reports domain deaths to a callback, so a VM
killed from outside marks its sandbox NOTREADY without waiting for a poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from vmcri.errors import HypervisorError

log = logging.getLogger(__name__)

DeathCallback = Callable[[str, str], None]  # (domain name, reason)


class Hypervisor(Protocol):
    def start(self, name: str, xml: str) -> None:
        """Create and boot a transient domain; raises HypervisorError."""
        ...

    def is_running(self, name: str) -> bool: ...

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI); a missing domain is success."""
        ...

    def destroy(self, name: str) -> None:
        """Pull the plug; a missing domain is success."""
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

    def start(self, name: str, xml: str) -> None:
        import libvirt

        try:
            self._connection().createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"cannot start VM {name}: {exc.get_error_message()}") from exc

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
