"""A hostile guest against the disks its pod VM is given (real daemon, real VMs).

A VM pod's container root filesystems reach the guest as disks (``handlers/vm/disks.py``):
each image layer an erofs file shared by every pod, read-only, and the pod's writable file
system, the guest's alone. Here a privileged container (which the guest refuses nothing)
writes garbage to every disk of its VM, raw, past the file systems on them. What must hold:
the layers' files on the host are byte for byte what they were, another pod using the same
layers runs and reads them intact, the host mounted nothing of the guest's disk, and the
attacker's pod goes away leaving nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import mount_points

pytestmark = pytest.mark.integration

CONFIG = """
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
writable_layer_mib = 128
"""

# Every disk of the guest (a device node of its own: runc gives even a privileged container
# of a VM pod no disk nodes) made writable in the guest, and 1 MiB of garbage written to it
# raw at 4 KiB and at 96 MiB (past its end on a small layer disk; in the writable disk's
# data blocks, which its ext4 leaves alone); prints the garbage's md5, then
# "<disk> ro=<0|1>" for each.
GARBAGE = """
head -c 1048576 /dev/urandom > /tmp/g
md5sum < /tmp/g
for d in /sys/block/sd* /sys/block/vd*; do
  test -e "$d" || continue
  n=${d##*/}
  dev=$(cat $d/dev)
  busybox mknod /tmp/$n b ${dev%:*} ${dev#*:}
  busybox blockdev --setrw /tmp/$n 2>/dev/null
  for at in 1 24576; do
    dd if=/tmp/g of=/tmp/$n bs=4096 seek=$at count=256 conv=fsync,notrunc 2>/dev/null
  done
  echo "$n ro=$(cat $d/ro)"
done
sync
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("disks"), NO_POD_NETWORK + CONFIG) as env:
        yield env


def _guest_root(env: VmEnv) -> Path:
    """The guest image's root disk the test daemon boots (the tree's build)."""
    return Path(__file__).resolve().parents[2] / "guest" / "build" / "rootfs.img"


def _layer_images(env: VmEnv) -> dict[Path, str]:
    found = sorted((env.tmp / "root" / "images" / "layers").glob("*/layer.erofs"))
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in found}


def test_a_guest_writing_garbage_to_every_disk_harms_neither_host_nor_other_pods(
    env: VmEnv,
) -> None:
    privileged = pb.LinuxSandboxSecurityContext(privileged=True)
    attacker, pod = env.run_pod(
        "garbage", linux=pb.LinuxPodSandboxConfig(security_context=privileged)
    )
    linux = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(privileged=True)
    )
    container = env.create(attacker, pod, "c", ["sleep", "600"], linux=linux)
    env.start(container)
    layers = _layer_images(env)
    assert layers, "the container's layers have no erofs images on the host"

    guest_root = _guest_root(env)  # the guest's own root disk, read-only too
    before_root = hashlib.sha256(guest_root.read_bytes()).hexdigest()
    request = pb.ExecSyncRequest(container_id=container, cmd=["sh", "-c", GARBAGE], timeout=120)
    result = env.runtime.ExecSync(request, timeout=180)
    assert result.exit_code == 0, result.stderr
    garbage, *lines = result.stdout.decode().splitlines()
    disks = dict(line.split(" ", 1) for line in lines)
    # The guest has its root image, its writable disk and one disk per layer; only the
    # writable one is writable in the guest (the rest it made writable itself).
    assert len(disks) == 2 + len(layers), disks
    assert sorted(disks.values()) == ["ro=0"] + ["ro=1"] * (1 + len(layers)), disks

    # The host: each layer file and the guest's root image as they were; the garbage is in
    # the pod's own disk only, and nothing of that disk is mounted on the host.
    assert _layer_images(env) == layers
    assert hashlib.sha256(guest_root.read_bytes()).hexdigest() == before_root
    disk_dir = env.tmp / "root" / "backends" / "vm" / attacker
    with open(disk_dir / "writable.img", "rb") as disk:
        disk.seek(96 << 20)
        assert hashlib.md5(disk.read(1 << 20)).hexdigest() == garbage.split()[0], result.stderr
    assert mount_points(disk_dir) == []

    # Another pod on the same layers runs, and reads them intact.
    other, other_pod = env.run_pod("after-garbage")
    reader = env.create(other, other_pod, "r", ["sleep", "600"])
    env.start(reader)
    check = ["sh", "-c", "cat /etc/passwd; sha256sum /bin/busybox"]
    seen = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=reader, cmd=check, timeout=60), timeout=90
    )
    assert seen.exit_code == 0, seen.stderr
    busybox = hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest()
    assert b"root:x:0:0:root:/root:/bin/sh\n" in seen.stdout
    assert busybox.encode() in seen.stdout

    # The attacker's pod goes away whole.
    for sandbox_id in (attacker, other):
        env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        env.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
    assert not disk_dir.exists()
    assert not env.state_dir(attacker).exists()
    assert _layer_images(env) == layers
