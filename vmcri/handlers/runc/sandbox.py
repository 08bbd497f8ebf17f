"""A runc pod on the host: pinned namespaces, pod files, /dev/shm, the PID namespace holder.

How the namespaces are pinned: ``unshare --net=F --ipc=F --uts=F`` creates them
for one short-lived helper (:mod:`vmcri.handlers.runc.podinit`, which sets the
hostname, brings loopback up and writes the pod's sysctls) and bind-mounts the
helper's ``/proc/<pid>/ns/*`` onto the files ``F`` before it exits, so the
namespaces outlive it. A shared PID namespace needs a living init instead of a
bind mount alone: ``setsid -f unshare --pid=F --fork --kill-child`` runs
:mod:`vmcri.handlers.runc.pause` as its PID 1, in its own session.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Callable

from vmcri.errors import HostCommandError, InvalidArgument
from vmcri.handlers.base import SandboxStarted
from vmcri.handlers.runc.exitfile import read_int_file
from vmcri.handlers.runc.host import MS_NODEV, MS_NOSUID, Host
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.pod_files import hostname_file, hosts_file, resolv_conf
from vmcri.model import NamespaceMode, PodConfig
from vmcri.oci.sysctls import normalise, validate_sysctls
from vmcri.store.records import SandboxRecord

SHM_SIZE = "64m"
PAUSE_WAIT_S = 10.0
NS_KINDS = ("net", "ipc", "uts", "pid")


class PodSandboxes:
    """Sets up and tears down the host side of runc pods."""

    def __init__(
        self,
        host: Host,
        layout: Layout,
        python: str = sys.executable,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.layout = layout
        self.python = python
        self.sleep = sleep

    def namespaces_of(self, pod: PodConfig) -> dict[str, bool]:
        """Which namespaces the pod owns (False: the host's)."""
        opts = pod.security.namespace_options
        for name in ("network", "pid", "ipc"):
            mode = getattr(opts, name)
            if mode not in (NamespaceMode.POD, NamespaceMode.NODE, NamespaceMode.CONTAINER):
                raise InvalidArgument(
                    f"config.linux.security_context.namespace_options.{name}: "
                    f"mode {mode.name} is not valid for a pod"
                )
        own_net = opts.network is not NamespaceMode.NODE
        return {
            "net": own_net,
            "uts": own_net,
            "ipc": opts.ipc is not NamespaceMode.NODE,
            "pid": opts.pid is NamespaceMode.POD,
        }

    def ns_path(self, sandbox_id: str, kind: str, pod: PodConfig) -> str:
        """The pinned namespace file, or "" when the pod uses the host's."""
        if not self.namespaces_of(pod)[kind]:
            return ""
        return str(self.layout.ns_path(sandbox_id, kind))

    def shm_path(self, sandbox_id: str, pod: PodConfig) -> str:
        if pod.security.namespace_options.ipc is NamespaceMode.NODE:
            return "/dev/shm"
        return str(self.layout.sandbox_dir(sandbox_id) / "shm")

    def setup(self, sandbox: SandboxRecord) -> SandboxStarted:
        """Create everything; on failure tear down what was made, then raise.

        Raises InvalidArgument (config), HostCommandError (unshare, mount).
        """
        pod = sandbox.config
        own = self.namespaces_of(pod)
        opts = pod.security.namespace_options
        validate_sysctls(
            pod.sysctls, opts.network is NamespaceMode.NODE, opts.ipc is NamespaceMode.NODE
        )
        contents = {
            "hostname": hostname_file(pod.hostname),
            "hosts": hosts_file(pod.hostname, ("127.0.1.1",) if pod.hostname else ()),
            "resolv.conf": resolv_conf(pod.dns),
        }
        directory = self.layout.sandbox_dir(sandbox.id)
        try:
            (directory / "ns").mkdir(parents=True, exist_ok=False)
            for name, text in contents.items():
                (directory / name).write_text(text)
            self._pin(sandbox.id, pod, own)
            if own["ipc"]:
                shm = directory / "shm"
                shm.mkdir()
                self.host.mount(
                    "shm", str(shm), "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={SHM_SIZE}"
                )
            if own["pid"]:
                self._start_pause(sandbox.id)
        except BaseException:
            self.teardown(sandbox.id)
            raise
        net = str(self.layout.ns_path(sandbox.id, "net")) if own["net"] else ""
        return SandboxStarted(runtime={"sandbox_dir": str(directory)}, netns_path=net)

    def _pin(self, sandbox_id: str, pod: PodConfig, own: dict[str, bool]) -> None:
        flags = []
        for kind in ("net", "ipc", "uts"):
            if own[kind]:
                path = self.layout.ns_path(sandbox_id, kind)
                path.touch()
                flags.append(f"--{kind}={path}")
        if not flags:
            return
        helper = [self.python, "-m", "vmcri.handlers.runc.podinit"]
        if own["uts"] and pod.hostname:
            helper += ["--hostname", pod.hostname]
        if own["net"]:
            helper.append("--loopback")
        for key, value in sorted(normalise(pod.sysctls).items()):
            helper += ["--sysctl", f"{key}={value}"]
        result = self.host.run(["unshare", *flags, "--", *helper], timeout=30)
        if result.returncode != 0:
            raise HostCommandError(
                "unshare (pod namespaces): "
                + (result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"),
                returncode=result.returncode,
            )

    def _start_pause(self, sandbox_id: str) -> None:
        path = self.layout.ns_path(sandbox_id, "pid")
        path.touch()
        pid_file = self.layout.sandbox_dir(sandbox_id) / "pause.pid"
        argv = [
            "setsid", "-f", "unshare", f"--pid={path}", "--fork", "--kill-child", "--",
            self.python, "-m", "vmcri.handlers.runc.pause", str(pid_file),
        ]  # fmt: skip
        result = self.host.run(argv, timeout=30, capture=False)
        if result.returncode != 0:
            raise HostCommandError(f"setsid unshare (pod PID namespace): exit {result.returncode}")
        deadline = time.monotonic() + PAUSE_WAIT_S
        while not (read_int_file(str(pid_file)) and self.host.is_mounted(str(path))):
            if time.monotonic() > deadline:
                raise HostCommandError("pod PID namespace holder did not come up in time")
            self.sleep(0.01)

    def pause_pid(self, sandbox_id: str) -> int:
        pid = read_int_file(str(self.layout.sandbox_dir(sandbox_id) / "pause.pid"))
        if pid and self._is_pause(pid, sandbox_id):
            return pid
        return 0

    def _is_pause(self, pid: int, sandbox_id: str) -> bool:
        argv = self.host.cmdline(pid)
        return (
            bool(argv)
            and any(sandbox_id in a for a in argv or [])
            and any("vmcri.handlers.runc.pause" in a for a in argv or [])
        )

    def stop(self, sandbox_id: str) -> None:
        """End the PID namespace holder; the namespaces stay for remove. Idempotent."""
        pid = self.pause_pid(sandbox_id)
        if not pid:
            return
        self.host.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + PAUSE_WAIT_S
        while self.pause_pid(sandbox_id):
            if time.monotonic() > deadline:
                raise HostCommandError(f"sandbox {sandbox_id}: PID namespace holder did not die")
            self.sleep(0.01)

    def alive(self, sandbox: SandboxRecord) -> bool:
        own = self.namespaces_of(sandbox.config)
        for kind in ("net", "ipc", "uts"):
            if own[kind] and not self.host.is_mounted(str(self.layout.ns_path(sandbox.id, kind))):
                return False
        return not own["pid"] or bool(self.pause_pid(sandbox.id))

    def teardown(self, sandbox_id: str) -> None:
        """Undo :meth:`setup`, whatever part of it happened. Idempotent.

        Raises HostCommandError if a mount cannot be detached.
        """
        directory = self.layout.sandbox_dir(sandbox_id)
        self.stop(sandbox_id)
        if not directory.exists():
            return
        for kind in NS_KINDS:
            path = self.layout.ns_path(sandbox_id, kind)
            if path.exists():
                self.host.unmount(str(path))
        if (directory / "shm").exists():
            self.host.unmount(str(directory / "shm"))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)
        if directory.exists():  # something is still mounted below: do not delete its content
            raise HostCommandError(f"sandbox dir {directory} could not be removed")
