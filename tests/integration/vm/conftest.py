"""A real daemon with the real guest image, libvirtd + QEMU, and a real registry.

VMs boot under software emulation on hosts without KVM (15-40 s each here), so
the tests share pods where they can. Teardown destroys every domain and unmount
everything the daemon under test made, even when a test failed half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK, daemon_with_busybox
from tests.support.registry import LocalRegistry
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.pool_vms import pool_vms_on_disk

BOOT_TIMEOUT_S = 240
TEMPLATE_TIMEOUT_S = 300  # a template is one boot under TCG, once per guest image version


def wait_for_template(daemon: RunningDaemon) -> None:
    """Until the daemon has a VM template (so pods are restored, as in production)."""

    def ready() -> bool:
        status = daemon.runtime().Status(pb.StatusRequest(), timeout=30).status
        return any(c.type == "VmTemplates" and c.status for c in status.conditions)

    wait_for(ready, TEMPLATE_TIMEOUT_S, "a VM template")


@dataclass
class VmEnv:
    tmp: Path
    registry: LocalRegistry
    image: str
    daemon: RunningDaemon
    sandboxes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    def restart(self, kill: bool) -> None:
        import signal

        stop_daemon(self.daemon, signal.SIGKILL if kill else signal.SIGTERM)
        self.daemon = start_daemon(self.tmp, config=self.tmp / "config.toml")

    def run_pod(
        self, name: str, handler: str = "vm", linux: pb.LinuxPodSandboxConfig | None = None
    ) -> tuple[str, pb.PodSandboxConfig]:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
            hostname=name,
            log_directory=str(self.tmp / "logs" / name),
            linux=linux,
        )
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        sandbox_id = self.runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
        self.sandboxes.append(sandbox_id)
        return sandbox_id, config

    def create(
        self,
        sandbox_id: str,
        pod: pb.PodSandboxConfig,
        name: str,
        command: list[str],
        mounts: Sequence[pb.Mount] = (),
        linux: pb.LinuxContainerConfig | None = None,
    ) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=self.image),
            command=command,
            log_path=f"{name}.log",
            mounts=mounts,
            linux=linux,
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
        )
        created: pb.CreateContainerResponse = self.runtime.CreateContainer(request, timeout=120)
        return created.container_id

    def start(self, container_id: str) -> None:
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)

    def status(self, container_id: str) -> pb.ContainerStatus:
        request = pb.ContainerStatusRequest(container_id=container_id)
        response: pb.ContainerStatusResponse = self.runtime.ContainerStatus(request, timeout=30)
        return response.status

    def pod_state(self, sandbox_id: str) -> int:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        response: pb.PodSandboxStatusResponse = self.runtime.PodSandboxStatus(request, timeout=30)
        return response.status.state

    def started_as(self, sandbox_id: str) -> str:
        """ "restored" (from a VM template) or "cold", as PodSandboxStatus's info says."""
        return self.runtime_info(sandbox_id)["start"]

    def runtime_info(self, sandbox_id: str) -> dict[str, str]:
        """The handler's part of PodSandboxStatus's verbose info."""
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        info = self.runtime.PodSandboxStatus(request, timeout=30).info["info"]
        return {key: str(value) for key, value in json.loads(info)["runtime"].items()}

    def log_of(self, pod: str, name: str) -> str:
        path = self.tmp / "logs" / pod / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def state_dir(self, sandbox_id: str) -> Path:
        return self.tmp / "state" / "backends" / "vm" / sandbox_id


def domain_exists(sandbox_id: str) -> bool:
    result = subprocess.run(
        ["virsh", "-c", "qemu:///system", "domstate", domain_name(sandbox_id)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def destroy_domain(sandbox_id: str) -> None:
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "destroy", domain_name(sandbox_id)],
        capture_output=True,
    )


@contextlib.contextmanager
def vm_daemon(
    tmp: Path, config: str = NO_POD_NETWORK, *, wait_template: bool = True
) -> Iterator[VmEnv]:
    """A daemon with busybox (``config`` appended), by default once it has a VM template;
    on the way out every pod VM the suite recorded is destroyed, whatever RemovePodSandbox
    could not reach."""
    with daemon_with_busybox(tmp, VmEnv, config) as env:
        if wait_template:
            wait_for_template(env.daemon)
        try:
            yield env
        finally:
            for sandbox_id in env.sandboxes:
                destroy_domain(sandbox_id)


# VMCRI_TEST_VM_POOL=N: the suite's shared daemon keeps a warm pool of N restored VMs
# (``pool_size``), so the VM tests that use ``vm_env`` run against pooled pods.
POOL_SIZE = int(os.environ.get("VMCRI_TEST_VM_POOL", "0"))
RESTORED = "pooled" if POOL_SIZE else "restored"  # how vm_env's pods start


@pytest.fixture(scope="module")
def vm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    pool = f'[runtimes.vm]\nbackend = "vm"\n[runtimes.vm.options]\npool_size = {POOL_SIZE}\n'
    with vm_daemon(tmp_path_factory.mktemp("vm"), NO_POD_NETWORK + pool) as env:
        if POOL_SIZE:
            pools = env.daemon.root / "backends" / "vm"
            wait_for(
                lambda: sum(vm.idle for vm in pool_vms_on_disk(pools)) >= POOL_SIZE,
                TEMPLATE_TIMEOUT_S,
                "a full pool",
            )
        yield env
