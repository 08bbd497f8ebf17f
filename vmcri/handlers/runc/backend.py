"""The ``runc`` backend: a pod's containers directly on the host, under runc.

A sandbox is a set of pinned namespaces and pod files
(:mod:`vmcri.handlers.runc.sandbox`); a container is an overlay rootfs, an OCI
bundle built by :func:`vmcri.oci.spec.build_spec`, and a detached monitor
process (:mod:`vmcri.handlers.runc.monitor`) that runs ``runc create``, owns
the container's output and records its exit. Everything the backend needs to
find a container again lives in files under its state directory, so a new
backend instance (a restarted daemon) picks up running containers as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmcri.agent.convert import usage_counters
from vmcri.agent.guest.cgroups import CgroupReader, counters_message
from vmcri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    HostCommandError,
    InvalidArgument,
    NotFound,
)
from vmcri.handlers.base import (
    Condition,
    ContainerExit,
    ContainerLiveness,
    ContainerUsage,
    ExecResult,
    HandlerFeatures,
    ImageInfo,
    PortConnection,
    ProcessSession,
    SandboxStarted,
)
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.runc import hostfacts
from vmcri.handlers.runc.cgroups import Cgroups, remove_tree
from vmcri.handlers.runc.exitfile import (
    MONITOR_FILE,
    PID_FILE,
    read_exit,
    read_int_file,
    write_exit,
)
from vmcri.handlers.runc.host import Host, RealHost, helper_argv
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.runc.rootfs import (
    mount_image_view,
    mount_rootfs,
    stage_idmapped_mounts,
    unmount_image_views,
    unmount_rootfs,
)
from vmcri.handlers.runc.runc_cli import Runc
from vmcri.handlers.runc.sandbox import PodSandboxes, unsearchable_dir
from vmcri.host.disk import capacity_of, tree_usage
from vmcri.host.imagevolumes import first_mount_per_image, resolve_sub_path
from vmcri.model import ContainerConfig, Mount, NamespaceMode, PodConfig, Resources
from vmcri.oci import process as proc
from vmcri.oci.context import SpecContext
from vmcri.oci.hostpaths import (
    host_devices,
    load_localhost_profile,
    resolve_devices,
    resolve_mounts,
)
from vmcri.oci.resources import linux_resources
from vmcri.oci.seccomp import LOCALHOST
from vmcri.oci.spec import build_spec
from vmcri.oci.userns import pod_root
from vmcri.oci.users import resolve_user
from vmcri.store.atomic import write_atomic
from vmcri.store.records import ContainerRecord, SandboxRecord

META_FILE = "meta.json"
EXIT_WAIT_AFTER_KILL_S = 30.0
POLL_S = 0.02


def create(options: RuncOptions, context: BackendContext) -> RuncBackend:
    """Factory named in :data:`vmcri.handlers.registry.BACKENDS`."""
    return RuncBackend(options, Layout(Path(context.state), Path(context.root)), RealHost())


class RuncBackend:
    """Implements :class:`vmcri.handlers.base.SandboxBackend` with host runc."""

    def __init__(
        self,
        options: RuncOptions,
        layout: Layout,
        host: Host,
        cgroups: Cgroups | None = None,
        python: str = sys.executable,
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.layout = layout
        self.host = host
        self.cgroups = cgroups or Cgroups()
        self.python = python
        self.clock = clock
        self.sleep = sleep
        self.runc = Runc(host, options.runc, str(layout.runc_root))
        self.pods = PodSandboxes(host, layout, python, sleep)
        self._caps = hostfacts.bounding_capabilities()
        self._oom_floor = (
            None if hostfacts.has_cap_sys_resource() else hostfacts.own_oom_score_adj()
        )
        self._rro = hostfacts.kernel_at_least(5, 12)
        # ID-mapped lower layers of overlayfs arrived in 5.19.
        self._userns = hostfacts.kernel_at_least(5, 19)

    # ---- runtime info -------------------------------------------------------------

    def features(self) -> HandlerFeatures:
        userns = self._userns and unsearchable_dir(self.layout.state) is None
        return HandlerFeatures(
            recursive_read_only_mounts=self._rro, user_namespaces=userns, userns_owns_netns=True
        )

    def conditions(self) -> Sequence[Condition]:
        if shutil.which(self.options.runc) is None:
            return [
                Condition("RuntimeReady", False, "RuncMissing", f"{self.options.runc!r} not found")
            ]
        return []

    # ---- sandboxes ----------------------------------------------------------------

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        """Raises InvalidArgument (config) and HostCommandError; leaves nothing behind."""
        self.layout.runc_root.mkdir(parents=True, exist_ok=True)
        return self.pods.setup(sandbox)

    def stop_sandbox(self, sandbox: SandboxRecord, containers: Sequence[ContainerRecord]) -> None:
        for container in containers:
            if self.layout.container_dir(container.id).exists():
                self.stop_container(sandbox, container, 0)
        self.pods.stop(sandbox.id)

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        self.pods.teardown(sandbox.id)
        if not sandbox.config.cgroup_parent:
            remove_tree(self.cgroups, f"{self.options.cgroup_parent.rstrip('/')}/{sandbox.id}")

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        return self.pods.alive(sandbox)

    # ---- containers ---------------------------------------------------------------

    def _cgroups_path(self, sandbox: SandboxRecord, container_id: str) -> str:
        parent = sandbox.config.cgroup_parent
        if parent:
            if not parent.startswith("/") or ".." in parent.split("/"):
                raise InvalidArgument(
                    f"config.linux.cgroup_parent: {parent!r} must be an absolute cgroup path"
                )
            return f"{parent.rstrip('/')}/vmcri-{container_id}"
        return f"{self.options.cgroup_parent.rstrip('/')}/{sandbox.id}/{container_id}"

    def _spec_context(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        image_config: dict[str, object],
        rootfs: str,
        cgroups_path: str,
    ) -> SpecContext:
        pod = sandbox.config
        cfg = container.config
        sec = cfg.security
        user = resolve_user(rootfs, proc.user_request(cfg, image_config))
        seccomp = None
        if sec.seccomp.kind == LOCALHOST and not sec.privileged:
            seccomp = load_localhost_profile(
                sec.seccomp.localhost_ref, self.options.seccomp_profile_root
            )
        target = ""
        if sec.namespace_options.pid is NamespaceMode.TARGET and sec.namespace_options.target_id:
            pid = self._running_pid(sec.namespace_options.target_id)
            target = f"/proc/{pid}/ns/pid" if pid else ""
        directory = self.layout.sandbox_dir(sandbox.id)
        return SpecContext(
            rootfs=rootfs,
            cgroups_path=cgroups_path,
            net_ns_path=self.pods.net_path(sandbox),
            ipc_ns_path=self.pods.ns_path(sandbox.id, "ipc", pod),
            uts_ns_path=self.pods.ns_path(sandbox.id, "uts", pod),
            pid_ns_path=self.pods.ns_path(sandbox.id, "pid", pod),
            target_pid_ns_path=target,
            hostname=pod.hostname,
            hostname_path=str(directory / "hostname") if pod.hostname else "",
            hosts_path=str(directory / "hosts"),
            resolv_conf_path=str(directory / "resolv.conf"),
            shm_path=self.pods.shm_path(sandbox.id, pod),
            user=user,
            devices=resolve_devices(cfg.devices),
            host_devices=host_devices() if sec.privileged else (),
            seccomp_localhost=seccomp,
            available_capabilities=self._caps,
            min_oom_score_adj=self._oom_floor,
            recursive_read_only_supported=self._rro,
            pids_limit=self.options.pids_limit,
            sandbox_id=sandbox.id,
            container_id=container.id,
        )

    def create_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, image: ImageInfo
    ) -> dict[str, str]:
        """Mount the rootfs, write the bundle, start the monitor (``runc create``).

        Raises InvalidArgument / NotFound (config), HostCommandError
        (mount, runc); on failure nothing is left behind.
        """
        cfg = _with_pod_network(container.config, sandbox.config)
        directory = self.layout.container_dir(container.id)
        layer_dir = self.layout.layer_dir(container.id)
        if directory.exists():
            raise FailedPrecondition(f"container {container.id}: state directory exists")
        self.pods.refresh_hosts(sandbox)
        root = pod_root(sandbox.config.security.namespace_options)
        # Private: the rootfs below holds the image's setuid binaries (CVE-2021-41091). A
        # user-namespaced pod's root must pass through it to reach its rootfs.
        directory.mkdir(parents=True, mode=0o700)
        if root is not None:
            os.chown(directory, *root)
        try:
            rootfs = self.layout.rootfs(container.id)
            mounts = resolve_mounts(cfg.mounts)
            cgroups_path = self._cgroups_path(sandbox, container.id)
            userns = self.pods.ns_path(sandbox.id, "user", sandbox.config)
            mount_rootfs(self.host, image.layer_dirs, layer_dir, rootfs, userns, root)
            if userns:
                stage = self.layout.staged_mounts_dir(container.id)
                mounts = stage_idmapped_mounts(self.host, mounts, stage, userns)
            mounts, views = self._mount_image_volumes(container, mounts, userns)
            ctx = self._spec_context(
                sandbox,
                dataclasses.replace(container, config=cfg),
                image.config,
                str(rootfs),
                cgroups_path,
            )
            ctx = dataclasses.replace(ctx, image_volume_paths=views, user_ns_path=userns)
            spec = build_spec(
                sandbox.config, dataclasses.replace(cfg, mounts=mounts), image.config, ctx
            )
            meta = {
                "stop_signal": proc.stop_signal(cfg, image.config),
                "cgroups_path": cgroups_path,
                "log_path": container.log_path,
                "sandbox_id": sandbox.id,
            }
            write_atomic(directory / "config.json", json.dumps(spec).encode(), 0o600)
            write_atomic(directory / META_FILE, json.dumps(meta).encode(), 0o644)
            self._start_monitor(container, cgroups_path)
        except BaseException:
            self._cleanup_container(container.id)
            raise
        return {"container_dir": str(directory), **{k: str(v) for k, v in meta.items()}}

    def _mount_image_volumes(
        self, container: ContainerRecord, mounts: tuple[Mount, ...], userns_path: str
    ) -> tuple[tuple[Mount, ...], dict[str, str]]:
        """Mount one read-only view per image the container names (under its state dir).

        Returns the mounts with sub-paths resolved inside their views, and the
        image reference -> view path map for the spec. Raises InvalidArgument
        naming ``config.mounts[i].image_sub_path``, HostCommandError (mount),
        FailedPrecondition (the image was not resolved at creation).
        """
        layers = {v.mount_index: v.layer_dirs for v in container.image_volumes}
        views: dict[str, str] = {}
        for ref, index in first_mount_per_image(mounts).items():
            if index not in layers:
                raise FailedPrecondition(f"config.mounts[{index}].image: image was not resolved")
            view = self.layout.image_volumes_dir(container.id) / str(index)
            mount_image_view(self.host, layers[index], view, userns_path)
            views[ref] = str(view)
        resolved = tuple(
            resolve_sub_path(views[m.image], m, i) if m.image else m for i, m in enumerate(mounts)
        )
        return resolved, views

    def _start_monitor(self, container: ContainerRecord, cgroups_path: str) -> None:
        container_id, log_path, cfg = container.id, container.log_path, container.config
        directory = self.layout.container_dir(container_id)
        argv = helper_argv(
            self.python, "vmcri.handlers.runc.monitor",
            "--runc", self.options.runc, "--runc-root", str(self.layout.runc_root),
            "--id", container_id, "--dir", str(directory), "--log", log_path,
            "--oom-file", self.cgroups.oom_events_file(cgroups_path),
        )  # fmt: skip
        argv += ["--tty"] if cfg.tty else []
        argv += ["--stdin"] if cfg.stdin else []
        argv += ["--stdin-once"] if cfg.stdin and cfg.stdin_once else []
        line = self.host.spawn_detached(argv, stderr_path=str(directory / "monitor.log"))
        try:
            report = json.loads(line)
        except ValueError:
            report = {"ok": False, "error": f"monitor gave no report ({line[:200]!r})"}
        if not isinstance(report, dict) or not report.get("ok"):
            error = report.get("error") if isinstance(report, dict) else None
            raise HostCommandError(f"runc create {container_id}: {error}")

    def _meta(self, container_id: str) -> dict[str, str]:
        try:
            with open(self.layout.container_dir(container_id) / META_FILE) as f:
                data = json.load(f)
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _monitor_pid(self, container_id: str) -> int:
        pid = read_int_file(str(self.layout.container_dir(container_id) / MONITOR_FILE))
        argv = self.host.cmdline(pid) if pid else None
        if argv and "vmcri.handlers.runc.monitor" in argv and container_id in argv:
            return pid
        return 0

    def _running_pid(self, container_id: str) -> int:
        if read_exit(str(self.layout.container_dir(container_id))) is not None:
            return 0
        state = self.runc.state(container_id)
        if state and state.get("status") in ("running", "paused"):
            pid = state.get("pid")
            return pid if isinstance(pid, int) else 0
        return 0

    def start_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> int:
        """``runc start``; returns the container's init pid. Raises HostCommandError, NotFound."""
        directory = self.layout.container_dir(container.id)
        if not directory.exists():
            raise NotFound(f"container {container.id}: not created in the runc backend")
        self.runc.start(container.id)
        return read_int_file(str(directory / PID_FILE))

    def _wait_exit(self, container_id: str, timeout_s: float) -> ContainerExit | None:
        directory = str(self.layout.container_dir(container_id))
        deadline = time.monotonic() + timeout_s
        while True:
            found = read_exit(directory)
            if found is not None or time.monotonic() >= deadline:
                return found
            self.sleep(POLL_S)

    def stop_container(
        self, sandbox: SandboxRecord, container: ContainerRecord, timeout_s: int
    ) -> None:
        """Stop signal, SIGKILL after ``timeout_s``; waits for the exit record. Idempotent.

        Raises HostCommandError if runc fails or the container does not die.
        """
        cid = container.id
        directory = self.layout.container_dir(cid)
        if not directory.exists() or read_exit(str(directory)) is not None:
            return
        state = self.runc.state(cid)
        if state is None:
            return
        if state.get("status") == "created":
            # Never started: the monitor waits on it; kill the waiting init.
            self.runc.kill(cid, "KILL", all_processes=True)
        else:
            if timeout_s > 0:
                signame = self._meta(cid).get("stop_signal") or "SIGTERM"
                if self.runc.kill(cid, signame.removeprefix("SIG")) and self._wait_exit(
                    cid, timeout_s
                ):
                    return
            self.runc.kill(cid, "KILL", all_processes=True)
        if self._wait_exit(cid, EXIT_WAIT_AFTER_KILL_S if self._monitor_pid(cid) else 0.5):
            return
        if self._monitor_pid(cid):
            raise HostCommandError(f"container {cid}: did not exit after SIGKILL")
        # The monitor is gone (killed by someone): record what we can so stop converges.
        state = self.runc.state(cid)
        if state is None or state.get("status") == "stopped":
            write_exit(
                str(directory),
                ContainerExit(137, self.clock(), "Error", "exit status lost: monitor not running"),
            )

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """Force-delete the runc container, its monitor, rootfs and files. Idempotent."""
        if (
            read_exit(str(self.layout.container_dir(container.id))) is None
            and self.layout.container_dir(container.id).exists()
        ):
            self.stop_container(sandbox, container, 0)
        self._cleanup_container(container.id)

    def _cleanup_container(self, container_id: str) -> None:
        directory = self.layout.container_dir(container_id)
        self.runc.delete(container_id)
        pid = self._monitor_pid(container_id)
        if pid:
            self.host.kill(pid, signal.SIGKILL)
        unmount_rootfs(
            self.host, self.layout.rootfs(container_id), self.layout.layer_dir(container_id)
        )
        unmount_image_views(self.host, self.layout.image_volumes_dir(container_id))
        unmount_image_views(self.host, self.layout.staged_mounts_dir(container_id))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)

    def container_liveness(
        self, sandbox: SandboxRecord, container: ContainerRecord
    ) -> ContainerLiveness:
        directory = str(self.layout.container_dir(container.id))
        found = read_exit(directory)
        if found is not None:
            return ContainerLiveness(running=False, exit=found)
        if not os.path.isdir(directory):
            return ContainerLiveness(running=False)
        state = self.runc.state(container.id)
        status = state.get("status") if state else None
        if state is not None and status in ("running", "paused"):
            pid = state.get("pid")
            return ContainerLiveness(running=True, pid=pid if isinstance(pid, int) else 0)
        if status == "stopped" and self._monitor_pid(container.id):
            # The monitor is draining output and about to write the exit record.
            found = self._wait_exit(container.id, 5.0)
            if found is not None:
                return ContainerLiveness(running=False, exit=found)
        return ContainerLiveness(running=False)

    def exec_sync(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        timeout_s: int,
    ) -> ExecResult:
        """``runc exec`` with bounded output. timeout 0 means none.

        Raises DeadlineExceeded on timeout (after killing the process),
        FailedPrecondition if the container is not running, HostCommandError.
        """
        if not self._running_pid(container.id):
            raise FailedPrecondition(f"container_id {container.id}: container is not running")
        pid_file = self.layout.container_dir(container.id) / f"exec-{time.monotonic_ns()}.pid"

        def kill_exec() -> None:
            pid = read_int_file(str(pid_file))
            if pid:
                self.host.kill(pid, signal.SIGKILL)

        try:
            result, timed_out = self.host.run_bounded(
                self.runc.exec_argv(container.id, str(pid_file), cmd),
                timeout=timeout_s or None,
                limit=self.options.exec_output_limit,
                on_timeout=kill_exec,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
        if timed_out:
            raise DeadlineExceeded(
                f"ExecSync in {container.id}: command timed out after {timeout_s}s"
            )
        return ExecResult(result.stdout, result.stderr, result.returncode)

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        """``runc update``; raises InvalidArgument (values), HostCommandError."""
        body = linux_resources(resources, self.options.pids_limit)
        path = self.layout.container_dir(container.id) / "update.json"
        write_atomic(path, json.dumps(body).encode(), 0o600)
        try:
            self.runc.update(container.id, str(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def reopen_log(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """Ask the monitor to reopen the log file; returns once the file exists again.

        Raises FailedPrecondition when no monitor runs, DeadlineExceeded if it does not react.
        """
        pid = self._monitor_pid(container.id)
        if not pid:
            raise FailedPrecondition(f"container_id {container.id}: its monitor is not running")
        self.host.kill(pid, signal.SIGHUP)
        if not container.log_path:
            return
        deadline = time.monotonic() + 5.0
        while not os.path.exists(container.log_path):
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"container_id {container.id}: log was not reopened")
            self.sleep(POLL_S)

    def container_usage(self, sandbox: SandboxRecord, container: ContainerRecord) -> ContainerUsage:
        path = self._meta(container.id).get("cgroups_path") or self._cgroups_path(
            sandbox, container.id
        )
        usage = self.cgroups.usage(path)
        upper = self.layout.layer_dir(container.id) / "upper"
        size, inodes = tree_usage(upper)
        return ContainerUsage(
            timestamp=self.clock(),
            cpu_usage_core_nano_seconds=usage.cpu_ns,
            memory_working_set_bytes=usage.memory_working_set,
            memory_usage_bytes=usage.memory_usage,
            memory_rss_bytes=usage.memory_rss,
            writable_layer_bytes=size,
            writable_layer_inodes=inodes,
            process_count=usage.pids,
            # The agent's reader and message, as the agent sends them for a VM pod.
            counters=usage_counters(
                counters_message(CgroupReader(Path(self.cgroups.root)).stats(path))
            ),
            layer_fs=capacity_of(upper),
        )

    # ---- streaming (vmcri.handlers.runc.streams) ------------------------------------

    def exec_session(
        self,
        sandbox: SandboxRecord,
        container: ContainerRecord,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> ProcessSession:
        """Interactive ``runc exec``; raises HostCommandError."""
        from vmcri.handlers.runc import streams

        return streams.start_exec(
            self.runc,
            container.id,
            cmd,
            tty=tty,
            stdin=stdin,
            exec_dir=self.layout.container_dir(container.id) / "execs",
        )

    def attach_supported(self) -> bool:
        return True

    def attach_session(
        self, sandbox: SandboxRecord, container: ContainerRecord, *, tty: bool, stdin: bool
    ) -> ProcessSession:
        """A connection to the container's monitor, which owns its stdio.

        Raises FailedPrecondition when the monitor does not answer (container gone).
        """
        from vmcri.handlers.runc import streams

        return streams.attach(self.layout.container_dir(container.id))

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Raises Unavailable (nothing listens), HostCommandError."""
        from vmcri.handlers.runc import streams

        return streams.dial(self.pods.net_path(sandbox), port)


def _with_pod_network(cfg: ContainerConfig, pod: PodConfig) -> ContainerConfig:
    """The container's config with the pod's network mode.

    Every container of a pod is in the pod's network (containerd and CRI-O
    ignore the container's own network mode the same way): a container of a
    host-network pod that leaves the mode at its default POD gets the host's
    network, not "no namespace to join".
    """
    opts = cfg.security.namespace_options
    pod_mode = pod.security.namespace_options.network
    if opts.network is pod_mode:
        return cfg
    security = dataclasses.replace(
        cfg.security, namespace_options=dataclasses.replace(opts, network=pod_mode)
    )
    return dataclasses.replace(cfg, security=security)
