"""The ``runc`` backend: a pod's containers directly on the host, under runc.

A sandbox is a set of pinned namespaces and pod files
(:mod:`vmcri.handlers.runc.sandbox`) and the pod's supervisor, the vmcri agent run on
the host (:mod:`vmcri.handlers.runc.host_agent`); a container is an overlay rootfs and
an OCI spec built by :func:`vmcri.oci.spec.build_spec`, handed to that agent, which
runs runc, holds the container's stdio and reports its output and exit as events. Every
container feature past the spec is :mod:`vmcri.supervisor.containers`, the same code as
the ``vm`` backend's; only the place of the agent differs. What the backend needs to find
a pod again lives in files under its state directory and in the agent, which outlives
the daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vmcri.errors import FailedPrecondition
from vmcri.handlers.base import HandlerFeatures, SandboxBackend, SandboxStarted
from vmcri.handlers.registry import BackendContext
from vmcri.handlers.runc import hostfacts
from vmcri.handlers.runc.host import Host, RealHost
from vmcri.handlers.runc.host_agent import HostAgents
from vmcri.handlers.runc.launcher import Launcher
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.runc.rootfs import (
    mount_image_view,
    mount_rootfs,
    stage_idmapped_mounts,
    unmount_image_views,
    unmount_rootfs,
)
from vmcri.handlers.runc.sandbox import PodSandboxes, unsearchable_dir
from vmcri.handlers.services import BackendServices
from vmcri.host.cgroups import PodCgroup, kill_all_in, pod_cgroup, remove_tree
from vmcri.host.imagevolumes import first_mount_per_image, resolve_sub_path
from vmcri.ids import new_id
from vmcri.model import (
    Condition,
    ContainerConfig,
    ImageInfo,
    Mount,
    NamespaceMode,
    PodConfig,
    Resources,
)
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
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.api import PortConnection
from vmcri.supervisor.containers import SupervisedContainers

log = logging.getLogger(__name__)


def create(options: RuncOptions, context: BackendContext) -> SandboxBackend:
    """Factory named in :data:`vmcri.handlers.registry.BACKENDS`."""
    layout = Layout(Path(context.state), Path(context.root))
    backend = RuncBackend(
        options, layout, RealHost(), context.services, cgroup_driver=context.config.cgroup_driver
    )
    backend.launcher.warm()
    return backend


class RuncBackend:
    """Implements :class:`vmcri.handlers.base.SandboxBackend` with host runc."""

    def __init__(
        self,
        options: RuncOptions,
        layout: Layout,
        host: Host,
        services: BackendServices,
        python: str = sys.executable,
        cgroup_driver: str = "cgroupfs",
        clock: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.layout = layout
        self.host = host
        self.python = python
        self.cgroup_driver = cgroup_driver  # how kubelet spells cgroup_parent (RuntimeConfig)
        self.clock = clock
        self._services = services
        self.launcher = Launcher(host, python, layout.state / "zygote" / "zygote.log")
        self.pods = PodSandboxes(host, layout, self.launcher, sleep)
        self.agents = HostAgents(host, layout, self.launcher, options.runc)
        self._containers = SupervisedContainers(
            self, services, exec_output_limit=options.exec_output_limit
        )
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

    def new_sandbox_id(self, config: PodConfig) -> str:
        return new_id()

    def run_sandbox(self, sandbox: SandboxRecord) -> SandboxStarted:
        """Raises InvalidArgument (config) and HostCommandError; leaves nothing behind."""
        agent_started = self.agents.begin(sandbox.id)
        try:
            started = self.pods.setup(sandbox)
        except BaseException:
            with contextlib.suppress(Exception):
                agent_started()
            self.agents.stop(sandbox.id)
            raise
        try:
            pid = agent_started()
        except BaseException:
            self.agents.stop(sandbox.id)
            self.pods.teardown(sandbox.id)
            raise
        runtime = {**started.runtime, "agent_url": self.agents.url(sandbox.id)}
        runtime["agent_pid"] = str(pid)
        return dataclasses.replace(started, runtime=runtime)

    def stop_sandbox(self, sandbox: SandboxRecord) -> None:
        """End the PID namespace holder, and with the pod whatever of it still runs: the
        container service has killed its containers and waited (``kill_all``); a straggler
        is killed through its cgroup, and the agent sends its exit up. The agent stays for
        RemoveContainer's runc delete; it goes with the sandbox (remove_sandbox)."""
        for container in self._services.containers_of(sandbox.id):
            kill_all_in(self._cgroups_path(sandbox, container.id))
        self.pods.stop(sandbox.id)

    def remove_sandbox(self, sandbox: SandboxRecord) -> None:
        self._containers.forget(sandbox.id)
        self.agents.stop(sandbox.id)
        self._kill_orphans(sandbox.id)
        self.pods.teardown(sandbox.id)
        pod = self._pod_cgroup(sandbox)
        if pod.vmcri_parent:
            remove_tree(pod.path)

    def sandbox_alive(self, sandbox: SandboxRecord) -> bool:
        alive = self.pods.alive(sandbox) and bool(self.agents.pid(sandbox.id))
        if alive:
            self._containers.reconnect(sandbox)  # after a restart: the events flow again
        return alive

    # ---- Placement (vmcri.supervisor.containers) -----------------------------------

    @property
    def supervisor(self) -> SupervisedContainers:
        """The pod's containers, run by its agent on the host."""
        return self._containers

    def agent_url(self, sandbox: SandboxRecord) -> str:
        return sandbox.runtime.get("agent_url") or self.agents.url(sandbox.id)

    def agent_running(self, sandbox_id: str) -> bool:
        if self.agents.pid(sandbox_id):
            return True
        self._kill_orphans(sandbox_id)
        return False

    def down_message(self) -> str:
        return "the pod's vmcri agent (its container supervisor) is not running"

    def stall_hint(self, sandbox_id: str) -> str:
        return f"the pod's agent logs to {self.agents.log_path(sandbox_id)}"

    def exits_dir(self, sandbox_id: str) -> Path:
        return self.layout.sandbox_dir(sandbox_id) / "exits"

    def writable_layer(self, sandbox_id: str, container_id: str) -> Path:
        return self.layout.layer_dir(container_id) / "upper"

    def _kill_orphans(self, sandbox_id: str) -> None:
        """Without its agent no one reaps a container or carries its output: end them all."""
        for container in self._services.containers_of(sandbox_id):
            path = container.runtime.get("cgroups_path", "")
            if path:
                kill_all_in(path)

    # ---- containers ---------------------------------------------------------------

    def _pod_cgroup(self, sandbox: SandboxRecord) -> PodCgroup:
        """Raises InvalidArgument naming ``config.linux.cgroup_parent``."""
        return pod_cgroup(
            sandbox.config.cgroup_parent, self.cgroup_driver, self.options.cgroup_parent, sandbox.id
        )

    def _cgroups_path(self, sandbox: SandboxRecord, container_id: str) -> str:
        """runc's cgroupfs driver takes it as is: a systemd slice is already expanded."""
        pod = self._pod_cgroup(sandbox)
        name = container_id if pod.vmcri_parent else f"vmcri-{container_id}"
        return f"{pod.path.rstrip('/')}/{name}"

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
            pid = self._containers.pid(sandbox, sec.namespace_options.target_id)
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
        """Mount the rootfs, build the spec, hand the container to the pod's agent (runc create).

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
            self._containers.create(sandbox, container, spec, str(rootfs))
        except BaseException:
            self._cleanup_container(container.id)
            raise
        return {"container_dir": str(directory), "cgroups_path": cgroups_path}

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

    def remove_container(self, sandbox: SandboxRecord, container: ContainerRecord) -> None:
        """runc delete in the agent, then the rootfs and the files. Idempotent."""
        self._containers.remove(sandbox, container)
        self._cleanup_container(container.id)

    def _cleanup_container(self, container_id: str) -> None:
        directory = self.layout.container_dir(container_id)
        unmount_rootfs(
            self.host, self.layout.rootfs(container_id), self.layout.layer_dir(container_id)
        )
        unmount_image_views(self.host, self.layout.image_volumes_dir(container_id))
        unmount_image_views(self.host, self.layout.staged_mounts_dir(container_id))
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            raise FailedPrecondition(f"container {container_id}: its directory is still in use")

    def update_resources(
        self, sandbox: SandboxRecord, container: ContainerRecord, resources: Resources
    ) -> None:
        """Raises InvalidArgument (values), the agent's errors (runc update)."""
        body = linux_resources(resources, self.options.pids_limit)
        self._containers.update_resources(sandbox, container, body)

    def update_sandbox_resources(self, sandbox: SandboxRecord, resources: Resources) -> None:
        """Nothing: kubelet has already resized the pod cgroup the containers run under."""

    # ---- streaming --------------------------------------------------------------

    def port_connect(self, sandbox: SandboxRecord, port: int) -> PortConnection:
        """Raises Unavailable (nothing listens), HostCommandError."""
        from vmcri.handlers.runc.port_dial import dial

        return dial(self.pods.net_path(sandbox), port)


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
