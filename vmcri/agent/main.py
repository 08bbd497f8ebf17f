"""``vmcri agent``: the entry point of the in-guest agent (PID 1's child or PID 1 in the VM).

It must start with nothing but the guest's Python: standard library, google.protobuf, vmcri.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from vmcri.errors import VmcriError

log = logging.getLogger("vmcri.agent")

DEFAULT_LISTEN = "serial://name:vmcri.agent"


class _HelpFormatter(argparse.HelpFormatter):
    """A fixed width: the default formatter, which argparse builds for every add_argument,
    imports shutil to ask for the terminal's width, ~70 ms of the agent's start under TCG."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmcri agent", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="serial/vsock/unix URL")
    parser.add_argument("--state-dir", type=Path, default=Path("/run/vmcri"))
    parser.add_argument(
        "--scratch-dir", type=Path, help="overlay upper/work dirs (default STATE/scratch)"
    )
    parser.add_argument(
        "--socket-dir", type=Path, help="runc console sockets (default STATE/sockets)"
    )
    parser.add_argument("--runc", default="runc", help="runc, or a binary with its CLI (crun)")
    parser.add_argument(
        "--seal-runc",
        action="store_true",
        help="run it from a sealed in-memory copy made at start (it then skips its own "
        "copy per container; in a VM that copy is the template's, on a host it would cost "
        "its size per pod)",
    )
    parser.add_argument("--runc-root", type=Path, help="runc --root (default STATE/runc)")
    parser.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    parser.add_argument(
        "--no-host-settings",
        action="store_true",
        help="do not set the hostname or sysctls (running on a host for tests)",
    )
    parser.add_argument(
        "--poweroff",
        choices=["auto", "yes", "no"],
        default="auto",
        help="power the VM off on Shutdown (auto: only when running as PID 1)",
    )
    parser.add_argument(
        "--daemonize",
        action="store_true",
        help="listen, then fork: the parent prints 'ready PID' and exits (the host's per-pod "
        "supervisor, which must outlive the daemon that started it)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def main(argv: list[str]) -> int:
    """Run the agent until Shutdown (or a signal when not PID 1). Returns an exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="vmcri-agent %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from vmcri.agent.guest.cgroups import CgroupReader
    from vmcri.agent.guest.containers import ContainerManager, GuestPaths
    from vmcri.agent.guest.disks import GuestDisks
    from vmcri.agent.guest.events import EventLog
    from vmcri.agent.guest.execs import ExecManager
    from vmcri.agent.guest.hotplug import Hotplug
    from vmcri.agent.guest.idmap import KernelIdMapper
    from vmcri.agent.guest.mounts import LibcMounter
    from vmcri.agent.guest.pod_pid import PodPidNamespace
    from vmcri.agent.guest.processes import Reaper, become_subreaper
    from vmcri.agent.guest.runc import Runc, sealed_copy
    from vmcri.agent.guest.sandbox import HostSettings, Sandbox
    from vmcri.agent.guest.server import Agent, serve
    from vmcri.agent.guest.volumes import GuestVolumes
    from vmcri.agent.transport import listen

    state: Path = args.state_dir
    scratch: Path = args.scratch_dir or state / "scratch"
    for path in (state, scratch):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    listener = None
    if args.daemonize:
        # Listen before forking, so that "ready" means a client can connect; fork before
        # any thread exists.
        try:
            listener = listen(args.listen)
        except (VmcriError, OSError) as exc:
            print(f"error cannot listen on {args.listen}: {exc}", flush=True)
            return 1
        _detach()
    if not become_subreaper():
        log.warning("cannot become a child subreaper: container exit codes will be lost")
    reaper = Reaper()
    reaper.start()
    events = EventLog()
    mounter = LibcMounter()
    disks = GuestDisks(enabled=not args.no_host_settings, mounter=mounter)
    containers = ContainerManager(
        runc=Runc(
            reaper,
            binary=sealed_copy(args.runc) if args.seal_runc else args.runc,
            root=args.runc_root or state / "runc",
        ),
        reaper=reaper,
        events=events,
        mounter=mounter,
        cgroups=CgroupReader(args.cgroup_root),
        paths=GuestPaths(state=state, scratch=scratch, sockets=args.socket_dir),
        disks=disks,
        # Only a guest's agent gets specs whose runtime makes the user namespace.
        idmapper=None if args.no_host_settings else KernelIdMapper(reaper),
        proc_sys=None if args.no_host_settings else Path("/proc/sys"),
    )
    stop = threading.Event()
    poweroff = args.poweroff == "yes" or (args.poweroff == "auto" and os.getpid() == 1)

    def shutdown() -> None:
        log.info("shutdown requested")
        os.sync()
        if poweroff:
            _power_off()
        stop.set()

    agent = Agent(
        containers=containers,
        execs=ExecManager(containers),
        sandbox=Sandbox(
            state,
            mounter,
            HostSettings(enabled=not args.no_host_settings),
            pod_pid=PodPidNamespace(state / "sandbox", reaper, mounter, args.cgroup_root).ensure,
            disks=disks,
            scratch=scratch,
        ),
        events=events,
        shutdown=shutdown,
        hotplug=Hotplug(enabled=not args.no_host_settings),
        volumes=GuestVolumes(state, scratch, mounter, own_tmpfs=not args.no_host_settings),
    )
    if os.getpid() != 1:
        signal.signal(signal.SIGTERM, _terminate(stop))
    if listener is None:
        try:
            listener = listen(args.listen)
        except (VmcriError, OSError) as exc:
            log.error("cannot open the agent channel %s: %s", args.listen, exc)
            return 1
    log.info("listening on %s (pid %d, %s)", args.listen, os.getpid(), _startup_cost())
    try:
        serve(listener, agent, stop)
    except _Terminated:
        listener.close()
    return 0


class _Terminated(Exception):
    """SIGTERM: leave the accept loop now, not at its next timeout."""


def _terminate(stop: threading.Event) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        stop.set()
        raise _Terminated

    return handler


def _detach() -> None:
    """Fork; the parent reports the child's PID on stdout and exits, the child goes on in a
    session of its own with stdin and stdout on /dev/null (stderr stays: the agent's log)."""
    pid = os.fork()
    if pid:
        sys.stdout.write(f"ready {pid}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def _startup_cost() -> str:
    """How long the agent took to start since /init exec'd it (the init passes its uptime)."""
    try:
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])
        since = now - float(os.environ["VMCRI_INIT_UPTIME"])
    except (OSError, KeyError, ValueError, IndexError):
        return "start-up time unknown"
    return f"{since:.2f}s after /init exec'd it"


def _power_off() -> None:
    """reboot(2) with LINUX_REBOOT_CMD_POWER_OFF: PID 1 cannot just exit (kernel panic)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.reboot(0x4321FEDC)
    except (ImportError, OSError, AttributeError) as exc:
        log.error("power off failed: %s", exc)
