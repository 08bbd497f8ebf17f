"""A runc pod on the host: pinned namespaces, pod files, /dev/shm, the PID namespace holder.

How the namespaces are made and pinned: one short-lived helper
(:mod:`vmcri.handlers.runc.podinit`) unshares them (its user namespace first,
when the pod has one, so that it owns the rest), sets the hostname, brings
loopback up and writes the pod's sysctls; the daemon bind-mounts the helper's
``/proc/<pid>/ns/*`` onto files under the sandbox directory before the helper
exits, so the namespaces outlive it. A shared PID namespace needs a living init
instead of a bind mount alone: the helper forks its PID 1, which becomes the
pod's pause process (:mod:`vmcri.host.pause`) in a session of its own.

The network namespace is normally not ours: the network layer
(:mod:`vmcri.network`) has made, pinned and configured it through CNI before
the sandbox is set up (``SandboxRecord.network``), and the helper joins it
with ``setns`` so the UTS and IPC namespaces and the sysctls go with it. A pod
with a user namespace is the exception: its network namespace must belong to
that user namespace (runc 1.1 joins the user namespace first and could not
enter one owned by the host's), so the helper unshares it there as before, it
is pinned here, and CNI configures it after setup
(``HandlerFeatures.userns_owns_netns``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

from vmcri.errors import FailedPrecondition, HostCommandError, InvalidArgument
from vmcri.handlers.base import SandboxStarted
from vmcri.handlers.runc import podinit
from vmcri.handlers.runc.host import MS_BIND, MS_NODEV, MS_NOSUID, Host
from vmcri.handlers.runc.launcher import Launcher
from vmcri.handlers.runc.layout import Layout
from vmcri.model import NamespaceMode, PodConfig
from vmcri.oci.pod_files import hostname_file, hosts_file, resolv_conf
from vmcri.oci.sysctls import normalise, validate_sysctls
from vmcri.oci.userns import check_pod_userns, pod_root, uses_userns
from vmcri.store.records import SandboxRecord

SHM_SIZE = "64m"
PAUSE_WAIT_S = 10.0
PAUSE_POLL_S = 0.002  # the pause is up ~3 ms after its fork: a 10 ms poll cost 10 ms a pod
HELPER_WAIT_S = 30.0
NS_KINDS = ("user", "net", "ipc", "uts", "pid")


class PodSandboxes:
    """Sets up and tears down the host side of runc pods."""

    def __init__(
        self,
        host: Host,
        layout: Layout,
        launcher: Launcher,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.layout = layout
        self.launcher = launcher
        self.sleep = sleep

    def namespaces_of(self, pod: PodConfig) -> dict[str, bool]:
        """Which namespaces the pod owns (False: the host's). Raises InvalidArgument."""
        opts = pod.security.namespace_options
        check_pod_userns(opts, "config.linux.security_context.namespace_options")
        for name in ("network", "pid", "ipc"):
            mode = getattr(opts, name)
            if mode not in (NamespaceMode.POD, NamespaceMode.NODE, NamespaceMode.CONTAINER):
                raise InvalidArgument(
                    f"config.linux.security_context.namespace_options.{name}: "
                    f"mode {mode.name} is not valid for a pod"
                )
        own_net = opts.network is not NamespaceMode.NODE
        return {
            "user": uses_userns(opts),
            "net": own_net,
            "uts": own_net,
            "ipc": opts.ipc is not NamespaceMode.NODE,
            "pid": opts.pid is NamespaceMode.POD,
        }

    def ns_path(self, sandbox_id: str, kind: str, pod: PodConfig) -> str:
        """The pinned namespace file, or "" when the pod uses the host's.

        For ``net``, use :meth:`net_path`: the network layer may own it.
        """
        if not self.namespaces_of(pod)[kind]:
            return ""
        return str(self.layout.ns_path(sandbox_id, kind))

    def net_path(self, sandbox: SandboxRecord) -> str:
        """The pod's network namespace: the network layer's, else our own pin, else ""."""
        if sandbox.network is not None and sandbox.network.netns_path:
            return sandbox.network.netns_path
        return self.ns_path(sandbox.id, "net", sandbox.config)

    def refresh_hosts(self, sandbox: SandboxRecord) -> None:
        """Rewrite /etc/hosts in place once the pod IP is known (user namespace pods).

        In place: running containers have the file bind-mounted, i.e. its inode.
        """
        path = self.layout.sandbox_dir(sandbox.id) / "hosts"
        text = _hosts(sandbox)
        try:
            if path.read_text() == text:
                return
            with path.open("r+") as f:
                f.write(text)
                f.truncate()
        except FileNotFoundError:
            return

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
            "hosts": _hosts(sandbox),
            "resolv.conf": resolv_conf(pod.dns),
        }
        directory = self.layout.sandbox_dir(sandbox.id)
        if own["user"]:
            _check_traversable(self.layout.state)
        try:
            # Private: the pod's /dev/shm (mode 1777) and namespace files live below.
            directory.mkdir(parents=True, mode=0o700)
            root = pod_root(opts)
            if root:
                os.chown(directory, *root)
            (directory / "ns").mkdir()
            for name, text in contents.items():
                (directory / name).write_text(text)
                if root:
                    # Bind-mounted as they are: owned by the pod's root, not by nobody.
                    os.chown(directory / name, *root)
            self._create_namespaces(sandbox, own)
            if own["ipc"]:
                shm = directory / "shm"
                shm.mkdir()
                owner = f",uid={root[0]},gid={root[1]}" if root else ""
                self.host.mount(
                    "shm",
                    str(shm),
                    "tmpfs",
                    MS_NOSUID | MS_NODEV,
                    f"mode=1777,size={SHM_SIZE}{owner}",
                )
        except BaseException:
            self.teardown(sandbox.id)
            raise
        return SandboxStarted(
            runtime={"sandbox_dir": str(directory)}, netns_path=self.net_path(sandbox)
        )

    def _create_namespaces(self, sandbox: SandboxRecord, own: dict[str, bool]) -> None:
        """Run the podinit helper and pin what it creates. Raises HostCommandError."""
        if not any(own.values()):
            return
        sandbox_id, pod = sandbox.id, sandbox.config
        join_net = _joined_netns(sandbox)
        if join_net and own["user"]:
            raise HostCommandError(
                "a pod with a user namespace cannot join a network namespace made outside it"
            )
        directory = self.layout.sandbox_dir(sandbox_id)
        create = {**own, "net": own["net"] and not join_net}
        spec = podinit.plan(
            create, pod.hostname, normalise(pod.sysctls), str(directory / "pause.pid"), join_net
        )
        helper = self.launcher.start_podinit(spec, stderr_path=str(directory / "podinit.log"))
        pause = 0
        try:
            line = helper.readline(HELPER_WAIT_S)
            if line == "userns":
                opts = pod.security.namespace_options
                self.host.set_id_maps(helper.pid, opts.uid_mappings, opts.gid_mappings)
                helper.send("mapped")
                line = helper.readline(HELPER_WAIT_S)
            word, _, rest = line.partition(" ")
            if word != "ready":
                raise HostCommandError(f"pod namespaces: {rest or line or 'helper died'}")
            pause = int(rest or 0)
            for kind, wanted in create.items():
                if not wanted:
                    continue
                path = self.layout.ns_path(sandbox_id, kind)
                path.touch()
                holder = pause if kind == "pid" else helper.pid
                self.host.mount(f"/proc/{holder}/ns/{kind}", str(path), "", MS_BIND, "")
        except BaseException:
            if pause:
                self.host.kill(pause, signal.SIGKILL)
            raise
        finally:
            status = helper.finish(HELPER_WAIT_S)
        if status != 0:
            raise HostCommandError(f"pod namespaces: helper exited with status {status}")
        if own["pid"]:
            self._wait_for_pause(sandbox_id)

    def _wait_for_pause(self, sandbox_id: str) -> None:
        deadline = time.monotonic() + PAUSE_WAIT_S
        while not self.pause_pid(sandbox_id):
            if time.monotonic() > deadline:
                raise HostCommandError("pod PID namespace holder did not come up in time")
            self.sleep(PAUSE_POLL_S)

    def pause_pid(self, sandbox_id: str) -> int:
        try:
            pid = int((self.layout.sandbox_dir(sandbox_id) / "pause.pid").read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and self._is_pause(pid, sandbox_id):
            return pid
        return 0

    def _is_pause(self, pid: int, sandbox_id: str) -> bool:
        """Whether ``pid`` (from the pid file, maybe reused) is PID 1 of the pod's namespace.
        Not by its command line: the pause overwrites it with its name."""
        return self.host.is_pid_ns_init(pid, str(self.layout.ns_path(sandbox_id, "pid")))

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
            self.sleep(PAUSE_POLL_S)

    def alive(self, sandbox: SandboxRecord) -> bool:
        own = self.namespaces_of(sandbox.config)
        for kind in ("user", "ipc", "uts"):
            if own[kind] and not self.host.is_mounted(str(self.layout.ns_path(sandbox.id, kind))):
                return False
        if own["net"] and not self.host.is_mounted(self.net_path(sandbox)):
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


def _joined_netns(sandbox: SandboxRecord) -> str:
    """The network layer's namespace for the pod to join, or "" to make its own (or none)."""
    network = sandbox.network
    return network.netns_path if network is not None else ""


def _hosts(sandbox: SandboxRecord) -> str:
    pod = sandbox.config
    ips = sandbox.network.addresses() if sandbox.network is not None else ()
    # Without an address the name still resolves, as Debian's 127.0.1.1 convention has it.
    return hosts_file(pod.hostname, ips or (("127.0.1.1",) if pod.hostname else ()))


def unsearchable_dir(path: Path) -> Path | None:
    """The first of ``path`` and its parents that others may not pass (no ``o+x``), if any.

    runc sets a user-namespaced container up as the pod's root, which is not
    the host's root: every directory down to the bundle must let it through.
    """
    for directory in [path, *path.parents]:
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return directory
    return None


def _check_traversable(path: Path) -> None:
    """Raises FailedPrecondition naming the directory :func:`unsearchable_dir` finds."""
    blocked = unsearchable_dir(path)
    if blocked is not None:
        mode = stat.S_IMODE(blocked.stat().st_mode)
        raise FailedPrecondition(
            f"{blocked} (mode {mode:o}) is not searchable by other users; pods with their "
            "own user namespace need o+x on the runtime state directory and every "
            "directory above it"
        )
