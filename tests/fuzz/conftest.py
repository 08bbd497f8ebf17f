"""A real daemon for the fuzz tier: both handlers, its own network namespace, and a
record of everything on the host that a request could leave behind.

The daemon runs in a network namespace of its own with only loopback up: a generated
PullImage names any registry, and nothing generated may leave this machine. So that
container RPCs get past the image lookup, busybox is pulled first from a registry on
loopback by a daemon on the same root, which then makes way for the isolated one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.fuzz.seeds import pod_config
from tests.integration.cri.conftest import SLEEPER
from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import wait_for_template
from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry, registries_conf_for, registry_available
from vmcri.api import api_pb2 as pb
from vmcri.handlers.vm.template_vms import TEMPLATE_DOMAIN_PREFIX
from vmcri.host.mounts import HostMounter, mount_points


@dataclass
class FuzzEnv:
    tmp: Path
    daemon: RunningDaemon
    image: str  # busybox, in the daemon's image store
    anchor: str  # a runc pod that exists, so that IDs in requests sometimes name one
    container: str  # a running container in it
    # What the daemon had made before any pod existed: all that may be there at the end.
    baseline_mounts: list[Path]
    baseline_files: set[str]
    baseline_processes: list[int]
    started: set[str] = field(default_factory=set)  # pods a generated request created

    def ensure_anchor(self) -> None:
        """Run a new anchor pod, or container, if a generated request took the last one."""
        runtime = self.daemon.runtime()
        pod = pb.PodSandboxStatusRequest(pod_sandbox_id=self.anchor)
        try:
            ready = runtime.PodSandboxStatus(pod, timeout=30).status.state == pb.SANDBOX_READY
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            ready = False
        if not ready:
            self.started.add(self.anchor)  # removed with the rest at the end
            self.anchor = run_anchor_pod(self.daemon, self.tmp, f"anchor-{len(self.started)}")
        try:
            status = runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=self.container), timeout=30
            ).status
            running = status.state == pb.CONTAINER_RUNNING and ready
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            running = False
        if not running:
            self.container = run_anchor_container(self.daemon, self.anchor, self.image)

    def hints(self) -> list[str]:
        """Strings the generators mix in: IDs that exist, paths of this test, handlers."""
        return [
            self.anchor,
            self.anchor[:12],
            self.container,
            self.image,
            "runc",
            "vm",
            str(self.tmp / "logs"),
            "sha256:" + "0" * 64,
            "127.0.0.1:1/fuzz/image:1",
        ]


def pull_busybox(tmp: Path) -> str:
    """busybox in the store below ``tmp``, pulled by a daemon that is stopped again."""
    with LocalRegistry(tmp / "registry") as registry:
        push_busybox_image(registry.host, "fuzz/busybox:1")
        image = f"{registry.host}/fuzz/busybox:1"
        conf = registries_conf_for(tmp / "registries.conf", registry.host)
        # No CNI: generated pods stay on loopback (the daemon is in a netns of its own too).
        (tmp / "config.toml").write_text(f'registries_conf = "{conf}"\n{NO_POD_NETWORK}')
        daemon = start_daemon(tmp, config=tmp / "config.toml")
        try:
            request = pb.PullImageRequest(image=pb.ImageSpec(image=image))
            daemon.images().PullImage(request, timeout=120)
        finally:
            stop_daemon(daemon)
    return image


def start_isolated_daemon(tmp: Path) -> RunningDaemon:
    """``vmcri serve`` with the default handlers (vm and runc) in a loopback-only netns."""
    netns = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return start_daemon(tmp, config=tmp / "config.toml", log_level="info", launcher=netns)


def files_below(root: Path) -> set[str]:
    """Every non-directory below ``root``, relative to it."""
    return {
        str(Path(dirpath, name).relative_to(root))
        for dirpath, _dirs, names in os.walk(root)
        for name in names
    }


def processes_naming(path: Path) -> list[int]:
    """PIDs whose command line mentions ``path`` (the daemon, pause processes, monitors, QEMU)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def domains_naming(path: Path) -> list[str]:
    """Pod VMs whose XML mentions ``path``: this daemon's, not other users'.

    A VM template the daemon builds in the background (``vmcritpl-``) is no pod and no
    leak; the template tests check that those go away."""
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        found = []
        for domain in conn.listAllDomains():
            try:
                if domain.name().startswith(TEMPLATE_DOMAIN_PREFIX):
                    continue
                if str(path) in domain.XMLDesc():
                    found.append(domain.name())
            except libvirt.libvirtError:
                continue  # gone since the listing: another user's transient VM
        return found
    finally:
        conn.close()


def run_anchor_container(daemon: RunningDaemon, sandbox_id: str, image: str) -> str:
    runtime = daemon.runtime()
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=f"anchor-{time.monotonic_ns()}"),
        image=pb.ImageSpec(image=image),
        command=SLEEPER,
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    container_id = str(runtime.CreateContainer(request, timeout=60).container_id)
    runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return container_id


def run_anchor_pod(daemon: RunningDaemon, tmp: Path, name: str = "anchor") -> str:
    request = pb.RunPodSandboxRequest(config=pod_config(tmp, name), runtime_handler="runc")
    return str(daemon.runtime().RunPodSandbox(request, timeout=60).pod_sandbox_id)


@pytest.fixture(scope="package")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc pods, namespaces, mounts)")
    for tool in ("runc", "unshare", "ip", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not registry_available():
        pytest.skip("docker-registry is not installed (the image of the anchor container)")
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "logs").mkdir()  # pods' log directories; also the host side of seeded mounts
    image = pull_busybox(tmp)
    daemon = start_isolated_daemon(tmp)
    try:
        # The vm handler builds its VM template in the background at start: a QEMU of the
        # daemon's, not of any request's. Fuzzed vm pods are then restored, as in production.
        wait_for_template(daemon)
        mounts = mount_points(tmp)
        files = files_below(daemon.state)
        processes = processes_naming(tmp)
        anchor = run_anchor_pod(daemon, tmp)
        container = run_anchor_container(daemon, anchor, image)
        yield FuzzEnv(tmp, daemon, image, anchor, container, mounts, files, processes)
    finally:
        stop_daemon(daemon)
        HostMounter().unmount_below(tmp)
        assert mount_points(tmp) == []
