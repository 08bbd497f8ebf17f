"""The pod's disks in the guest: its writable disk and its images' read-only layer disks.

A VM pod's container root filesystems never cross a file server: the host attaches each
image layer it needs as a read-only SCSI disk holding an erofs image of the unpacked layer
(``vmcri/images/layer_erofs.py``), and the pod's writable file system as one more disk
(``vmcri/handlers/vm/disks.py``), all on the VM's one virtio-scsi controller, target 0, the
LUN naming the disk. Here the agent finds a LUN's block device (hotplugged: it may take a
moment to appear), mounts the writable disk where the overlays' upper and work dirs go, and
mounts each layer once, read-only, under ``/run/vmcri/layers/<lun>``, where every
container of the pod that uses the layer stacks it as an overlay lowerdir.

The agent also runs on the host for runc pods (``--no-host-settings``): there it must
never mount a host disk, so these calls are refused.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from vmcri.agent.guest.mounts import MS_RDONLY, Mounter
from vmcri.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument

MAX_LUN = 16383  # virtio-scsi's last LUN (libvirt's unit)
DISK_WAIT_S = 20.0  # a hotplugged disk shows up in the guest (scanned under emulation)
POLL_S = 0.02
MS_NODEV = 4
MS_NOSUID = 2
MS_NOATIME = 1024
VIRTIO_SCSI = "virtio_scsi"


class DiskPaths(NamedTuple):
    sys_scsi: Path = Path("/sys/bus/scsi/devices")
    scsi_hosts: Path = Path("/sys/class/scsi_host")
    dev: Path = Path("/dev")
    layers: Path = Path("/run/vmcri/layers")


GUEST_DISK_PATHS = DiskPaths()


class GuestDisks:
    def __init__(
        self,
        enabled: bool,
        mounter: Mounter,
        paths: DiskPaths = GUEST_DISK_PATHS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._enabled = enabled
        self._mounter = mounter
        self._paths = paths
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def mount_writable(self, lun: int, target: Path) -> None:
        """Mount the pod's writable disk (ext4, made by the host) at ``target``; done already
        is success.

        Raises FailedPrecondition (not in a VM), InvalidArgument (a bad LUN),
        DeadlineExceeded (the disk never appeared), HostCommandError (mount failed).
        """
        self._check(lun)
        with self._lock:
            if self._mounter.is_mounted(str(target)):
                return
            device = self.device(lun)
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            # noinit_itable: the host made the file sparse, its inode tables read as zeros
            # already; ext4's lazy zeroing of them would only cost the guest's CPU.
            flags = MS_NOSUID | MS_NODEV | MS_NOATIME
            self._mounter.mount(device, str(target), "ext4", flags, "noinit_itable")
            os.chmod(target, 0o700)

    def mount_layers(self, luns: Iterable[int]) -> list[str]:
        """Each layer disk mounted (once, read-only); returns their mount points in order.

        Raises like :meth:`mount_writable`.
        """
        wanted = list(luns)
        for lun in wanted:
            self._check(lun)
        points = []
        with self._lock:
            for lun in wanted:
                point = self._paths.layers / str(lun)
                if not self._mounter.is_mounted(str(point)):
                    device = self.device(lun)
                    point.mkdir(parents=True, exist_ok=True, mode=0o755)
                    self._mounter.mount(device, str(point), "erofs", MS_RDONLY | MS_NOATIME, "")
                points.append(str(point))
        return points

    def device(self, lun: int) -> str:
        """The block device of LUN ``lun`` on the virtio-scsi controller, once it is there.

        Raises DeadlineExceeded.
        """
        deadline = self._clock() + DISK_WAIT_S
        while True:
            found = self._find(lun)
            if found:
                return found
            if self._clock() >= deadline:
                raise DeadlineExceeded(
                    f"disk at SCSI LUN {lun} did not appear within {DISK_WAIT_S:.0f}s"
                )
            self._sleep(POLL_S)

    def _find(self, lun: int) -> str:
        try:
            entries = [e for e in os.listdir(self._paths.sys_scsi) if e.endswith(f":0:0:{lun}")]
        except OSError:
            return ""
        for entry in entries:
            host = entry.split(":", 1)[0]
            if _read(self._paths.scsi_hosts / f"host{host}" / "proc_name") != VIRTIO_SCSI:
                continue
            try:
                names = os.listdir(self._paths.sys_scsi / entry / "block")
            except OSError:
                continue  # still being probed
            if names and _opens(self._paths.dev / names[0]):
                return str(self._paths.dev / names[0])
        return ""

    def _check(self, lun: int) -> None:
        if not self._enabled:
            raise FailedPrecondition("this agent runs on the host: it mounts no disk")
        if not 0 <= lun <= MAX_LUN:
            raise InvalidArgument(f"disk LUN {lun} is out of range (0-{MAX_LUN})")


def _opens(device: Path) -> bool:
    """The disk can be opened, so mounted: devtmpfs makes its /dev node (and sysfs its
    ``block`` entry) while the kernel still adds the disk, and an open meanwhile fails
    with ENXIO (seen under emulation: ``mount`` of a just-hotplugged layer failed)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""
