"""A running pod VM's state into a checkpoint, the VM left running: QEMU's migration
stream to a unix socket vmcri reads, then the writable disks while the guest is paused.

``migrate`` copies the guest's RAM while it runs and pauses it only for the last dirty
pages and the device state, so the pause is short; the stream carries each zero page
as a flag, not 4 KiB, so a 416 MiB guest that uses 40 MiB costs about 40 MiB (QEMU 7.2
has no mapped-ram, and ``virDomainSaveFlags`` would stop the domain: a new QEMU
process, pid, cgroup and agent connection on resume). RAM a previous template restore
left shared is written too (``x-ignore-shared`` off). Once the stream completed, the
guest stays paused while its writable disks are copied (their data extents only, so a
sparse 2 GiB layer costs what it holds), then ``cont`` resumes it. Any failure or the
deadline cancels the migration and resumes the guest; the caller removes the files.

QEMU refuses to migrate while a 9p export is mounted in the guest (a pod whose container
has a volume: the agent mounts the share then) and a vhost-user-fs device cannot be
migrated at all: :func:`unsavable` asks QEMU for its migration blockers and reads the
live XML for virtio-fs, and the checkpointer refuses such a pod, saying why.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.manifest import FileEntry
from vmcri.errors import FailedPrecondition, HypervisorError, InvalidArgument

MEMORY_FILE = "vm-state.migration"
FD_NAME = "vmcri-checkpoint"
EXTENTS_MAGIC = b"VMCRIEXT1\n"
_EXTENT = struct.Struct("<QQ")  # offset, length
_CHUNK = 1 << 20


class DomainMonitor(Protocol):
    """What the snapshot needs of libvirt: the live XML and QMP."""

    def live_xml(self, name: str) -> str: ...

    def qmp(self, name: str, command: str, **arguments: Any) -> Any:
        """Raises HypervisorError."""
        ...

    def pass_fd(self, name: str, fd_name: str, fd: int) -> None:
        """Give QEMU a duplicate of ``fd`` as ``fd_name`` (QMP getfd); HypervisorError."""
        ...


@dataclass(frozen=True)
class Disk:
    target: str  # vda, vdb...
    path: str  # the host file behind it


def unsavable(monitor: DomainMonitor, name: str) -> list[str]:
    """Why QEMU could not save the domain now: its migration blockers (a 9p export the
    guest mounted: "Migration is disabled when VirtFS export path ... is mounted in the
    guest") and its virtio-fs shares (vhost-user-fs cannot be migrated); empty if none.

    Raises HypervisorError."""
    status = monitor.qmp(name, "query-migrate") or {}
    reasons = [str(reason) for reason in status.get("blocked-reasons", [])]
    for fs in ET.fromstring(monitor.live_xml(name)).iterfind("./devices/filesystem"):
        driver, target = fs.find("driver"), fs.find("target")
        if driver is not None and driver.get("type") == "virtiofs":
            tag = target.get("dir", "?") if target is not None else "?"
            reasons.append(f"virtio-fs share {tag} (vhost-user-fs cannot be migrated)")
    return reasons


def writable_disks(xml: str) -> list[Disk]:
    """The domain's disks backed by a host file and not read-only: the pod's layers."""
    disks = []
    for disk in ET.fromstring(xml).iterfind("./devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if disk.find("readonly") is not None or source is None or target is None:
            continue
        path = source.get("file") or source.get("dev") or ""
        if path:
            disks.append(Disk(target.get("dev", ""), path))
    return disks


Write = Callable[[str, Callable[[], bytes]], FileEntry]


def save_running(
    monitor: DomainMonitor, name: str, write: Write, deadline: Deadline
) -> list[FileEntry]:
    """Write the domain's memory and device state and its writable disks through
    ``write(file name, chunk source)``; the domain runs on afterwards, whatever happened.

    Raises HypervisorError, DeadlineExceeded, or what ``write`` raises.
    """
    if reasons := unsavable(monitor, name):
        raise FailedPrecondition(f"VM {name} cannot be saved: {'; '.join(reasons)}")
    xml = monitor.live_xml(name)
    entries: list[FileEntry] = []
    paused = False
    try:
        monitor.qmp(
            name,
            "migrate-set-capabilities",
            capabilities=[{"capability": "x-ignore-shared", "state": False}],
        )
        entries.append(_stream_migration(monitor, name, write, deadline))
        paused = True  # a completed migration leaves the guest paused (postmigrate)
        for disk in writable_disks(xml):
            deadline.check(f"copying disk {disk.target} of VM {name}")
            entries.append(write(f"disk-{disk.target}.extents", _extents(disk.path, deadline)))
    except BaseException:
        with contextlib.suppress(HypervisorError):
            monitor.qmp(name, "migrate_cancel")
        raise
    finally:
        _resume(monitor, name, paused)
    return entries


def _stream_migration(
    monitor: DomainMonitor, name: str, write: Write, deadline: Deadline
) -> FileEntry:
    """QEMU writes the stream into a pipe it got as a descriptor (``getfd``): no socket
    path QEMU's user must reach, nothing another process can connect to."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            monitor.pass_fd(name, FD_NAME, write_fd)
        finally:
            os.close(write_fd)
        monitor.qmp(name, "migrate", uri=f"fd:{FD_NAME}")

        def chunk() -> bytes:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline.remaining()))
            if not ready:
                deadline.check(f"saving VM {name}'s memory")
            return os.read(read_fd, _CHUNK)

        entry = write(MEMORY_FILE, chunk)
    finally:
        os.close(read_fd)
    status = monitor.qmp(name, "query-migrate") or {}
    if status.get("status") != "completed":
        raise HypervisorError(
            f"VM {name}: migration ended {status.get('status')!r}: "
            f"{status.get('error-desc', 'no reason given')}"
        )
    return entry


def _resume(monitor: DomainMonitor, name: str, paused: bool) -> None:
    """Let the guest run again unless it runs already (a failed migration resumes it)."""
    state = monitor.qmp(name, "query-status") or {}
    if paused or not state.get("running", False):
        monitor.qmp(name, "cont")


def _extents(path: str, deadline: Deadline) -> Callable[[], bytes]:
    """A chunk source of the file's data extents: magic, then (offset, length, bytes)..."""
    chunks = _extent_chunks(path, deadline)
    return lambda: next(chunks, b"")


def _extent_chunks(path: str, deadline: Deadline) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield EXTENTS_MAGIC + struct.pack("<Q", os.fstat(fd).st_size)
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: only a hole is left
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            yield _EXTENT.pack(start, stop - start)
            os.lseek(fd, start, os.SEEK_SET)
            left = stop - start
            while left:
                data = os.read(fd, min(left, _CHUNK))
                if not data:
                    raise HypervisorError(f"{path} shrank while it was copied")
                left -= len(data)
                yield data
            deadline.check(f"copying {path}")
            offset = stop
    finally:
        os.close(fd)


def write_extents(read: Callable[[int], bytes], target_fd: int, max_size: int) -> None:
    """Rebuild a disk from its extents (read from a verified checkpoint) into
    ``target_fd``; the size and every extent are bounded by ``max_size``."""
    head = read(len(EXTENTS_MAGIC) + 8)
    if not head.startswith(EXTENTS_MAGIC):
        raise InvalidArgument("path: a disk of the checkpoint is not in extents format")
    (size,) = struct.unpack("<Q", head[len(EXTENTS_MAGIC) :])
    if size > max_size:
        raise InvalidArgument(f"path: a disk of the checkpoint is {size} bytes, over {max_size}")
    os.ftruncate(target_fd, size)
    while header := read(_EXTENT.size):
        if len(header) != _EXTENT.size:
            raise InvalidArgument("path: a disk of the checkpoint ends inside an extent header")
        offset, length = _EXTENT.unpack(header)
        if offset + length > size:
            raise InvalidArgument("path: a disk extent of the checkpoint lies past its end")
        os.lseek(target_fd, offset, os.SEEK_SET)
        while length:
            data = read(min(length, _CHUNK))
            if not data:
                raise InvalidArgument("path: a disk of the checkpoint ends inside an extent")
            os.write(target_fd, data)
            length -= len(data)


def load_stream(
    monitor: DomainMonitor, name: str, stream_fd: int, size: int, deadline: Deadline
) -> None:
    """Feed a saved migration stream (``size`` bytes from ``stream_fd``, a verified
    checkpoint file) into the domain ``name``, which QEMU started waiting for it
    (``-incoming defer``), and let it run. Its disks must hold the saved data first
    (:func:`write_extents`). On failure the caller destroys the domain.

    Raises HypervisorError, DeadlineExceeded.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            monitor.pass_fd(name, FD_NAME, read_fd)
        finally:
            os.close(read_fd)
        monitor.qmp(name, "migrate-incoming", uri=f"fd:{FD_NAME}")
        left = size
        while left:
            _, ready, _ = select.select([], [write_fd], [], max(0.0, deadline.remaining()))
            if not ready:
                deadline.check(f"loading VM {name}'s memory")
            sent = os.sendfile(write_fd, stream_fd, None, min(left, _CHUNK))
            if sent == 0:
                raise HypervisorError(f"VM {name}: the saved stream ended {left} bytes early")
            left -= sent
    except BrokenPipeError as exc:
        status = monitor.qmp(name, "query-migrate") or {}
        raise HypervisorError(
            f"VM {name} refused the saved state: {status.get('error-desc', exc)}"
        ) from exc
    finally:
        os.close(write_fd)
    while not (monitor.qmp(name, "query-status") or {}).get("running", False):
        status = monitor.qmp(name, "query-migrate") or {}
        if status.get("status") == "failed":
            raise HypervisorError(
                f"VM {name} refused the saved state: {status.get('error-desc', 'no reason')}"
            )
        if (monitor.qmp(name, "query-status") or {}).get("status") == "paused" and status.get(
            "status"
        ) == "completed":
            monitor.qmp(name, "cont")  # libvirt did not start it (created paused)
        deadline.check(f"waiting for VM {name} to run its loaded state")
        time.sleep(0.02)


class LibvirtMonitor:
    """:class:`DomainMonitor` over a libvirt connection (QMP through libvirt-qemu):
    its own, or the one ``connection`` returns (a hypervisor's)."""

    def __init__(self, uri: str, connection: Callable[[], Any] | None = None) -> None:
        self._uri = uri
        self._conn: Any = None
        self._shared = connection

    def _domain(self, name: str) -> Any:
        import libvirt

        try:
            if self._shared is not None:
                return self._shared().lookupByName(name)
            if self._conn is None:
                self._conn = libvirt.open(self._uri)
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"VM {name}: {exc.get_error_message()}") from exc

    def live_xml(self, name: str) -> str:
        return str(self._domain(name).XMLDesc(0))

    def qmp(self, name: str, command: str, **arguments: Any) -> Any:
        return self.qmp_on(self._domain(name), command, arguments, [])

    def pass_fd(self, name: str, fd_name: str, fd: int) -> None:
        self.qmp_on(self._domain(name), "getfd", {"fdname": fd_name}, [fd])

    @staticmethod
    def qmp_on(domain: Any, command: str, arguments: Any, fds: list[int]) -> Any:
        """One QMP command to a libvirt domain object, with ``fds`` passed along; its
        ``return``. Raises HypervisorError."""
        import json

        import libvirt
        import libvirt_qemu

        message = json.dumps({"execute": command, "arguments": arguments})
        try:
            if fds:
                raw, _ = libvirt_qemu.qemuMonitorCommandWithFiles(domain, message, fds, 0)
            else:
                raw = libvirt_qemu.qemuMonitorCommand(domain, message, 0)
            reply = json.loads(raw)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"QMP {command}: {exc.get_error_message()}") from exc
        if "error" in reply:
            raise HypervisorError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")
