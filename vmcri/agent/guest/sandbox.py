"""SetupSandbox: the pod-wide state of the guest (hostname, hosts, DNS, sysctls, the pod
network, the pod's shared PID namespace: ``pod_pid.py``, its writable disk: ``disks.py``);
and MountShares: the pod's 9p share, mounted once a container has a volume on it (until then
QEMU can save the VM: it cannot while a 9p export is mounted in the guest).

The guest root is read-only, so the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf are
written under ``<state>/sandbox/`` and their paths returned: the host bind-mounts them into each
container's spec, exactly as the runc handler does with host files.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from vmcri.agent.guest.disks import GuestDisks
from vmcri.agent.guest.mounts import MS_RDONLY, Mounter
from vmcri.agent.guest.network import GuestNetwork, check_interfaces
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, HostCommandError, InvalidArgument

MAX_FILE = 64 * 1024
MAX_SYSCTLS = 256
MAX_MOUNTS = 64
MAX_NIC_WAIT_S = 30
MAX_ENTROPY = 512
# <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]), RNDRESEEDCRNG = _IO('R', 0x07)
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+){1,8}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")
OPTION_RE = re.compile(r"^[A-Za-z0-9_.=-]{1,64}$")


class HostSettings(NamedTuple):
    """The side effects on the whole guest kernel; a host test runs the agent without them."""

    set_hostname: Callable[[str], None] = socket.sethostname
    proc_sys: Path = Path("/proc/sys")
    network: GuestNetwork = GuestNetwork()
    enabled: bool = True
    set_clock: Callable[[int], None] = lambda ns: _set_wall_clock(ns)
    add_entropy: Callable[[bytes], None] = lambda data: _add_entropy(data)


class Sandbox:
    def __init__(
        self,
        state: Path,
        mounter: Mounter,
        settings: HostSettings,
        pod_pid: Callable[[], str] | None = None,
        disks: GuestDisks | None = None,
        scratch: Path | None = None,
    ) -> None:
        """``pod_pid`` makes the pod's PID namespace (once) and returns the file that
        containers join (:meth:`vmcri.agent.guest.pod_pid.PodPidNamespace.ensure`); without
        it, a setup that asks for one is refused. ``disks`` mounts the pod's writable disk
        at ``scratch``, where the containers' overlay upper and work dirs go."""
        self.dir = state / "sandbox"
        self._mounter = mounter
        self._settings = settings
        self._pod_pid = pod_pid
        self._disks = disks
        self._scratch = scratch

    def setup(self, req: agent_pb2.SetupSandboxRequest) -> agent_pb2.SetupSandboxResponse:
        """Validate everything first, then apply; repeating the same setup is harmless.

        Raises:
            InvalidArgument: a field breaks its rule (named in the message).
            HostCommandError: a sysctl, a mount or the pod's PID namespace failed.
            FailedPrecondition: a shared PID namespace asked of an agent that cannot make one.
        """
        if req.hostname and not HOSTNAME_RE.match(req.hostname):
            raise InvalidArgument(f"hostname {req.hostname[:80]!r} is not a valid host name")
        for name, content in (("hosts", req.hosts), ("resolv_conf", req.resolv_conf)):
            if len(content) > MAX_FILE:
                raise InvalidArgument(f"{name} is larger than {MAX_FILE} bytes")
        if len(req.sysctls) > MAX_SYSCTLS:
            raise InvalidArgument(f"more than {MAX_SYSCTLS} sysctls")
        for key, value in req.sysctls.items():
            if not SYSCTL_RE.match(key):
                raise InvalidArgument(f"sysctl name {key[:80]!r} is not valid")
            if len(value) > 256 or "\n" in value:
                raise InvalidArgument(f"sysctl {key} value is too long or has a newline")
        check_interfaces(req.interfaces)
        if req.wall_clock_ns < 0 or req.nic_wait_s > MAX_NIC_WAIT_S:
            raise InvalidArgument("wall_clock_ns or nic_wait_s is out of range")
        if len(req.entropy) > MAX_ENTROPY:
            raise InvalidArgument(f"entropy is larger than {MAX_ENTROPY} bytes")
        if req.share_pid and self._pod_pid is None:
            raise FailedPrecondition("share_pid: this agent cannot make a pod PID namespace")
        writable = req.HasField("writable_lun")
        if writable and (self._disks is None or self._scratch is None):
            raise FailedPrecondition("writable_lun: this agent mounts no disk")

        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        files = {
            "hostname": (req.hostname + "\n").encode() if req.hostname else b"",
            "hosts": req.hosts,
            "resolv.conf": req.resolv_conf,
        }
        for name, content in files.items():
            _write_atomic(self.dir / name, content)
        if self._settings.enabled:
            if req.entropy:
                try:
                    self._settings.add_entropy(req.entropy)
                except OSError as exc:
                    raise HostCommandError(f"cannot add the host's entropy: {exc}") from exc
            if req.wall_clock_ns:
                try:
                    self._settings.set_clock(req.wall_clock_ns)
                except OSError as exc:
                    raise HostCommandError(f"cannot set the wall clock: {exc}") from exc
            if req.hostname:
                self._settings.set_hostname(req.hostname)
            _refuse_router_ads(self._settings.proc_sys)
            for key, value in req.sysctls.items():
                path = self._settings.proc_sys / key.replace(".", "/")
                try:
                    path.write_text(value)
                except OSError as exc:
                    raise HostCommandError(f"sysctl {key}={value}: {exc}") from exc
            # After the sysctls: a pod's net.* sysctls may shape how its addresses behave.
            # Each NIC again, once it is there: one hotplugged while the loop above ran
            # copied ``default`` before it was written.
            self._settings.network.configure(
                req.interfaces,
                wait_s=req.nic_wait_s,
                before_up=lambda name: _refuse_router_ads_on(
                    self._settings.proc_sys, name, req.sysctls
                ),
            )
        if writable and self._disks is not None and self._scratch is not None:
            self._disks.mount_writable(req.writable_lun, self._scratch)
        pid_ns = self._pod_pid() if req.share_pid and self._pod_pid is not None else ""
        return agent_pb2.SetupSandboxResponse(
            hostname_path=str(self.dir / "hostname"),
            hosts_path=str(self.dir / "hosts"),
            resolv_conf_path=str(self.dir / "resolv.conf"),
            pid_ns_path=pid_ns,
        )

    def mount_shares(self, req: agent_pb2.MountSharesRequest) -> None:
        """Mount the pod's host shares, checked first; one mounted already stays as it is.

        Raises InvalidArgument (a tag, target or option breaks its rule), HostCommandError.
        """
        if len(req.mounts) > MAX_MOUNTS:
            raise InvalidArgument(f"more than {MAX_MOUNTS} mounts")
        for mount in req.mounts:
            _check_mount(mount)
        for mount in req.mounts:
            self._mount_9p(mount)

    def _mount_9p(self, mount: agent_pb2.Mount9p) -> None:
        if self._mounter.is_mounted(mount.target):
            return
        os.makedirs(mount.target, mode=0o755, exist_ok=True)
        options = ["trans=virtio", "version=9p2000.L"]
        flags = 0
        for option in mount.options:
            if option == "ro":
                flags |= MS_RDONLY
            else:
                options.append(option)
        self._mounter.mount(mount.tag, mount.target, "9p", flags, ",".join(options))


def _refuse_router_ads(proc_sys: Path) -> None:
    """``accept_ra = 0`` for all, default (a NIC hotplugged later) and every NIC there now.

    The pod's addresses and routes come from CNI; an advertisement from another station
    on the bridge must not add its own (the host drops those a pod sends, but not every
    node's bridge carries only vmcri pods). Written before the pod's sysctls, which win.
    """
    conf = proc_sys / "net" / "ipv6" / "conf"
    try:
        scopes = sorted(entry.name for entry in conf.iterdir())
    except FileNotFoundError:
        return  # a kernel without IPv6
    except OSError as exc:
        raise HostCommandError(f"cannot list {conf}: {exc}") from exc
    for scope in scopes:
        try:
            (conf / scope / "accept_ra").write_text("0")
        except FileNotFoundError:
            continue  # an interface that went away
        except OSError as exc:
            raise HostCommandError(f"{conf / scope / 'accept_ra'}: {exc}") from exc


def _refuse_router_ads_on(proc_sys: Path, nic: str, sysctls: Mapping[str, str]) -> None:
    """``accept_ra = 0`` on one NIC, unless the pod's own sysctls say otherwise."""
    value = sysctls.get(f"net.ipv6.conf.{nic}.accept_ra", "0")
    path = proc_sys / "net" / "ipv6" / "conf" / nic / "accept_ra"
    try:
        path.write_text(value)
    except FileNotFoundError:
        return  # a kernel without IPv6, or IPv6 off on this NIC
    except OSError as exc:
        raise HostCommandError(f"{path}: {exc}") from exc


def _check_mount(mount: agent_pb2.Mount9p) -> None:
    if not TAG_RE.match(mount.tag):
        raise InvalidArgument(f"mounts: tag {mount.tag[:80]!r} is not a valid 9p tag")
    target = mount.target
    if not target.startswith("/") or os.path.normpath(target) != target or target == "/":
        raise InvalidArgument(f"mounts: target {target[:200]!r} must be a clean absolute path")
    for option in mount.options:
        if not OPTION_RE.match(option):
            raise InvalidArgument(f"mounts: option {option[:80]!r} is not allowed")


def _set_wall_clock(ns: int) -> None:
    time.clock_settime_ns(time.CLOCK_REALTIME, ns)


def _add_entropy(data: bytes) -> None:
    """Mix ``data`` into the kernel's input pool, credited at 8 bits a byte (the host's
    own kernel RNG made it), then reseed the RNG from that pool at once: what the guest
    draws from now on depends on these bytes, which no other VM was given. A restored
    guest shares its RNG's state with every clone of its template until its VM generation
    ID reseeds it; this makes the pod's randomness its own whatever the guest did before."""
    import fcntl
    import struct

    fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
