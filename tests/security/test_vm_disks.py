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

# For every disk of the guest: is it read-only, can it be made writable, and does a raw
# write of 1 MiB of garbage (past its first 4 KiB) reach it; "<disk> ro=<0|1> dd=<rc>".
GARBAGE = """
for d in /sys/block/sd* /sys/block/vd*; do
  [ -e "$d" ] || continue
  n=${d##*/}
  ro=$(cat $d/ro)
  busybox blockdev --setrw /dev/$n 2>/dev/null
  dd if=/dev/urandom of=/dev/$n bs=4096 seek=1 count=256 conv=fsync,notrunc 2>/dev/null
  echo "$n ro=$ro dd=$?"
done
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("disks"), NO_POD_NETWORK + CONFIG) as env:
        yield env


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

    request = pb.ExecSyncRequest(container_id=container, cmd=["sh", "-c", GARBAGE], timeout=120)
    result = env.runtime.ExecSync(request, timeout=180)
    disks = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())
    # The guest has its root image, its writable disk and one disk per layer.
    assert len(disks) >= 2 + len(layers), result
    read_only = {name: facts for name, facts in disks.items() if "ro=1" in facts}
    writable = {name: facts for name, facts in disks.items() if "ro=0" in facts}
    assert len(read_only) >= 1 + len(layers), disks  # the root image and every layer
    assert all(facts.endswith("dd=1") for facts in read_only.values()), disks
    assert [facts for facts in writable.values()] == ["ro=0 dd=0"], disks  # its own: written

    # The host: each layer file as it was, nothing of the pod's mounted.
    assert _layer_images(env) == layers
    disk_dir = env.tmp / "root" / "backends" / "vm" / attacker
    assert (disk_dir / "writable.img").is_file()
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
