"""A VM pod's hostPath volumes live in the pod's own mount namespace: real libvirt, QEMU, guest.

Two vm handlers: ``vm`` restores pods from the VM template (9p: QEMU serves the files),
``vmcold`` cold-boots them (templates off, so virtiofs: virtiofsd serves them). In both
the node can remove a directory a volume holds a mount on while the pod runs, the host's
namespace holds no copy of a volume's mounts, and a daemon killed and restarted still
finds the pod's namespace and leaves no mount behind when the pod goes. A recursive
read-only volume is read-only below too, whichever OCI runtime the guest runs (``vmrunc``:
runc 1.1.5 instead of crun).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import mount_points

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

HANDLERS = """
[runtimes.vm]
backend = "vm"
[runtimes.vmcold]
backend = "vm"
[runtimes.vmcold.options]
template = "off"
[runtimes.vmrunc]
backend = "vm"
[runtimes.vmrunc.options]
template = "off"
oci_runtime = "runc"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("vol"), NO_POD_NETWORK + HANDLERS) as env:
        yield env


def _exec(env: VmEnv, container_id: str, script: str) -> pb.ExecSyncResponse:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    response: pb.ExecSyncResponse = env.runtime.ExecSync(request, timeout=120)
    return response


@pytest.mark.parametrize(("handler", "started"), [("vm", "restored"), ("vmcold", "cold")])
def test_a_submount_directory_goes_while_the_pod_runs_and_a_restart_cleans_up(
    env: VmEnv, tmp_path: Path, handler: str, started: str
) -> None:
    volume = tmp_path / "volume"
    sub = volume / "sub"
    sub.mkdir(parents=True)
    (volume / "hello.txt").write_text("hello\n")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        (sub / "in-sub.txt").write_text("in the submount\n")
        sandbox_id, pod = env.run_pod(f"sub-{handler}", handler)
        assert env.started_as(sandbox_id) == started
        mounts = [pb.Mount(container_path="/data", host_path=str(volume))]
        container_id = env.create(sandbox_id, pod, "c", ["sleep", "600"], mounts=mounts)
        env.start(container_id)
        seen = _exec(env, container_id, "cat /data/sub/in-sub.txt")
        assert (seen.exit_code, seen.stdout) == (0, b"in the submount\n"), seen.stderr
        state = env.tmp / "state" / "backends" / handler / sandbox_id
        # The host's namespace holds the share's own binds, never the volume or its
        # submount (and no rootfs: that reaches the guest as disks).
        here = mount_points(state)
        assert here and not any(p.name == "rootfs" for p in here), here
        assert not any("volumes" in p.parts for p in here), here
        assert mount_points(sub) == [sub]  # the node's own tmpfs, and no copy of it
    finally:
        subprocess.run(["umount", str(sub)], check=True)

    sub.rmdir()  # EBUSY while a copy of the tmpfs sat on it in the host's namespace

    # The guest may hold the removed directory for its entry timeout (virtiofs: FUSE caches
    # a lookup, and virtiofsd's descriptor keeps the detached tmpfs readable meanwhile);
    # then it is gone, cleanly, and the rest of the volume works throughout.
    def gone() -> bytes:
        read = _exec(env, container_id, "cat /data/hello.txt; cat /data/sub/in-sub.txt")
        assert read.stdout.startswith(b"hello\n"), read
        return read.stdout if b"No such file or directory" in read.stderr else b""

    assert wait_for(gone, 30, "the guest to see the directory gone") == b"hello\n"

    # A daemon killed and restarted finds the pod's namespace: removing the pod leaves
    # no mount and no directory behind.
    env.restart(kill=True)
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    assert mount_points(state) == [] and not state.exists()
    assert (volume / "hello.txt").read_text() == "hello\n"  # nothing deleted through a mount


@pytest.mark.parametrize("handler", ["vmcold", "vmrunc"])
def test_a_recursive_read_only_volume_whatever_the_guest_runtime(
    env: VmEnv, tmp_path: Path, handler: str
) -> None:
    volume = tmp_path / "volume"
    sub = volume / "sub"
    sub.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        sandbox_id, pod = env.run_pod(f"rro-{handler}", handler)
        mount = pb.Mount(
            container_path="/data", host_path=str(volume), readonly=True, recursive_read_only=True
        )
        container_id = env.create(sandbox_id, pod, "c", ["sleep", "600"], mounts=[mount])
        env.start(container_id)
        wrote = _exec(env, container_id, "touch /data/sub/x; touch /data/x")
        assert wrote.stderr.count(b"Read-only file system") == 2, wrote
        assert list(volume.iterdir()) == [sub] and list(sub.iterdir()) == []
        env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        env.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
    finally:
        subprocess.run(["umount", str(sub)], check=True)
