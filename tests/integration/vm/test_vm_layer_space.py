"""VM pods' writable layers are promised no more disk than is free: real daemon, real VMs,
on a small file system of the test's own (an ext4 image, loop-mounted as the root dir).

With 256 MiB layers and 64 MiB kept free on a 512 MiB disk, the first pod gets its full
layer, the second what is left (sized down), and a third is refused with
RESOURCE_EXHAUSTED before any VM boots, leaving nothing behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from vmcri.doctor.layer_checks import check_layer_space
from vmcri.doctor.model import Status

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

DISK_MIB = 512
LAYER_MIB = 256
RESERVE_MIB = 64
SMALL_LAYERS = f"""
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
writable_layer_mib = {LAYER_MIB}
writable_layer_reserve_mib = {RESERVE_MIB}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    tmp = tmp_path_factory.mktemp("disk")
    image, root = tmp / "disk.img", tmp / "root"
    root.mkdir()
    with open(image, "wb") as f:
        f.truncate(DISK_MIB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(root)], check=True)
    try:
        # The harness unmounts everything below tmp (this file system too) on the way out.
        with vm_daemon(tmp, NO_POD_NETWORK + SMALL_LAYERS) as env:
            yield env
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False, capture_output=True)


def test_layers_are_sized_down_then_refused_when_the_disk_is_promised(env: VmEnv) -> None:
    backends = env.tmp / "root" / "backends"
    first, _ = env.run_pod("first")
    assert env.runtime_info(first)["writable_layer_mib"] == str(LAYER_MIB)
    second, _ = env.run_pod("second")
    sized_down = int(env.runtime_info(second)["writable_layer_mib"])
    assert 64 <= sized_down < LAYER_MIB, sized_down
    assert (backends / "vm" / second / "writable.img").stat().st_size == sized_down << 20

    with pytest.raises(grpc.RpcError) as refused:
        env.run_pod("third")
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    message = str(refused.value.details())
    assert f"writable_layer_mib = {LAYER_MIB}" in message and "MiB free" in message, message
    assert "promised to 2 pods' layers" in message, message
    pods = {p.name for p in (backends / "vm").iterdir() if p.name != "templates"}
    assert pods == {first, second}  # the refused pod left no directory (nor VM: it never booted)

    doctor = check_layer_space(backends, "vm", LAYER_MIB, RESERVE_MIB)
    assert doctor.status is Status.FAIL and "2 pods' layers" in doctor.found, doctor
