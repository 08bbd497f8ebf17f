"""OnlineResources: bring online the vCPUs and memory the host added to the VM.

A Linux guest adds a hotplugged CPU (an ACPI event) or memory block (virtio-mem) but,
without udev, leaves a CPU offline, as it does the CPUs beyond ``maxcpus=`` that a VM
under TCG has from boot (``domain.plugs_vcpus``); memory is onlined by the kernel itself
(``memhp_default_state=online`` on the command line, see ``domain.kernel_cmdline``), and
the agent onlines any block still offline as well. The host asks after each growth and
checks the answer before a container gets the larger limit.

The agent also runs on the host for runc pods (``--no-host-settings``): there it must
never touch the host's CPUs or memory, so this call is refused.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("vmcri.agent")

MAX_CPUS = 288  # QEMU's most vCPUs for q35
MAX_WAIT_MS = 60_000
POLL_S = 0.05
CPU_DIR_RE = re.compile(r"^cpu[0-9]+$")
MEMORY_DIR_RE = re.compile(r"^memory[0-9]+$")


class HotplugPaths(NamedTuple):
    system: Path = Path("/sys/devices/system")  # cpu/, memory/
    meminfo: Path = Path("/proc/meminfo")


GUEST_PATHS = HotplugPaths()


class Hotplug:
    def __init__(
        self,
        enabled: bool,
        paths: HotplugPaths = GUEST_PATHS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._enabled = enabled
        self._paths = paths
        self._clock = clock
        self._sleep = sleep

    def online(self, req: agent_pb2.OnlineResourcesRequest) -> agent_pb2.OnlineResourcesResponse:
        """Online every offline memory block, and CPUs until ``req.cpus`` are online or
        ``req.wait_ms`` have passed; the answer says what is online (the host judges it).

        Raises InvalidArgument (a value out of range), FailedPrecondition (not in a VM).
        """
        if req.cpus > MAX_CPUS or req.wait_ms > MAX_WAIT_MS:
            raise InvalidArgument(f"cpus ({MAX_CPUS} at most) or wait_ms is out of range")
        if not self._enabled:
            raise FailedPrecondition("this agent runs on the host: it onlines no CPU or memory")
        deadline = self._clock() + req.wait_ms / 1000
        self._online_memory()
        while True:
            online = self._online_cpus(req.cpus)
            if online >= req.cpus or self._clock() >= deadline:
                break
            self._sleep(POLL_S)
        return agent_pb2.OnlineResourcesResponse(
            online_cpus=online, memory_total_bytes=self._memory_total()
        )

    def _online_cpus(self, wanted: int) -> int:
        """Online offline CPUs, lowest first, until ``wanted`` are online; returns how many
        are online. Never more: under TCG every vCPU the VM may grow to is present from
        boot, and only the host says how many the pod has."""
        base = self._paths.system / "cpu"
        cpus = [e for e in base.iterdir() if CPU_DIR_RE.match(e.name)] if base.is_dir() else []
        cpus.sort(key=lambda e: int(e.name[3:]))
        # the boot CPU cannot go offline and has no switch
        online = [c for c in cpus if _read(c / "online") in ("1", "")]
        count = len(online)
        for cpu in cpus:
            if count >= wanted:
                break
            if cpu in online:
                continue
            _write(cpu / "online", "1")
            count += _read(cpu / "online") == "1"
        return count

    def _online_memory(self) -> None:
        base = self._paths.system / "memory"
        for entry in base.iterdir() if base.is_dir() else ():
            if MEMORY_DIR_RE.match(entry.name) and _read(entry / "state") == "offline":
                _write(entry / "state", "online")

    def _memory_total(self) -> int:
        try:
            with open(self._paths.meminfo, encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError) as exc:
            log.warning("cannot read MemTotal: %s", exc)
        return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value, encoding="ascii")
    except OSError as exc:  # e.g. EBUSY while the kernel still brings it up: asked again
        log.info("%s <- %s: %s", path, value, exc.strerror)
