"""The pod share as the guest's file server sees it, with a real VM (9p: QEMU serves the files).

QEMU serves a 9p share as root, in the mount namespace libvirt made for it, so
whatever the guest asks of the share, QEMU does there. Entering that namespace
and trying what a hostile guest would ask for shows what the guest can do: the
share holds only kubelet's volumes (a container's rootfs comes as disks), and
the guest cannot touch the directories that hold the host's mount points.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from vmcri.api import api_pb2 as pb
from vmcri.handlers.vm.domain import domain_name

pytestmark = pytest.mark.integration

NINE_P = """
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
shared_fs = "9p"
writable_layer_mib = 128
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    config = NO_POD_NETWORK + NINE_P
    with vm_daemon(tmp_path_factory.mktemp("share"), config, wait_template=False) as env:
        yield env


def _in_qemu_namespace(sandbox_id: str, script: str) -> subprocess.CompletedProcess[str]:
    pid = Path(f"/run/libvirt/qemu/{domain_name(sandbox_id)}.pid").read_text().strip()
    return subprocess.run(
        ["nsenter", "-t", pid, "-m", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_file_server_serves_no_rootfs_and_cannot_touch_the_mount_points(
    env: VmEnv,
) -> None:
    sandbox_id, pod = env.run_pod("share")
    container_id = env.create(sandbox_id, pod, "c", ["sleep", "600"])
    env.start(container_id)
    share = env.state_dir(sandbox_id) / "share"

    # The container's rootfs reaches the guest as disks: nothing of it is in the share.
    found = _in_qemu_namespace(sandbox_id, f"find {share} -mindepth 1 -maxdepth 4")
    assert found.returncode == 0 and "rootfs" not in found.stdout, found
    for attack in (
        f"ln -s / {share}/containers-evil",
        f"mkdir {share}/planted",
        f"touch {share}/file",
    ):
        done = _in_qemu_namespace(sandbox_id, attack)
        assert done.returncode != 0, attack
        assert "Read-only file system" in done.stderr, (attack, done.stderr)

    # The container fills its rootfs: it hits the pod's writable disk (ENOSPC), not host
    # memory, and the host's file of that disk stays the size it was made.
    fill = ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=512 2>&1; echo rc=$?"]
    filled = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=fill, timeout=120), timeout=150
    )
    assert b"No space left on device" in filled.stdout, filled.stdout
    disk = env.tmp / "root" / "backends" / "vm" / sandbox_id / "writable.img"
    assert disk.stat().st_size == 128 << 20


def test_the_file_server_cannot_write_a_read_only_volume_or_image_layer(
    env: VmEnv, tmp_path: Path
) -> None:
    # Whatever a hostile guest asks of the share, the file server's copy of a read-only
    # volume and of a one-layer image volume refuses writes: their flags were set before
    # the mounts were attached, so they reached the copy in QEMU's namespace.
    volume = tmp_path / "volume"
    volume.mkdir()
    sandbox_id, pod = env.run_pod("share-ro")
    mounts = [
        pb.Mount(container_path="/data", host_path=str(volume), readonly=True),
        pb.Mount(container_path="/img", image=pb.ImageSpec(image=env.image), readonly=True),
    ]
    container_id = env.create(sandbox_id, pod, "c", ["sleep", "600"], mounts=mounts)
    env.start(container_id)
    share = env.state_dir(sandbox_id) / "share" / "containers" / container_id
    for target in (f"{share}/volumes/0/x", f"{share}/image-volumes/1/x"):
        done = _in_qemu_namespace(sandbox_id, f"touch {target}")
        assert "Read-only file system" in done.stderr, (target, done.stderr)
    assert not (volume / "x").exists()
    flags = _in_qemu_namespace(sandbox_id, f"grep ' {share}/volumes/0 ' /proc/self/mountinfo")
    assert " ro," in flags.stdout and "nosuid" in flags.stdout and "nodev" in flags.stdout, flags
