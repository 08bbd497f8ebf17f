"""A root container with every capability and no seccomp, in a VM pod with its own user
namespace, goes after the guest: the guest's kernel and namespaces belong to the guest's
initial user namespace, which maps nothing of the container's.

It mounts a proc of its own (its PID namespace is its own, so the kernel lets it) and
writes /proc/sysrq-trigger and a kernel sysctl through it, makes a block device node,
renames the guest, adds a network link, and gives its files to an ID outside its
mapping, on its rootfs and on its emptyDir (ID-mapped ext4). Each fails; the guest keeps
its name and the pod keeps working. Without the user namespace each of them works (run
once with the pod's and the container's ``userns_options`` left out: all seven exit 0),
as the guest kernel's root may: the VM stays the boundary either way, the namespace adds
one inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.userns_pods import container_linux, pod_linux
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

ATTACKER = pb.LinuxContainerSecurityContext(
    capabilities=pb.Capability(add_capabilities=["ALL"]),
    seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
)
# Each attempt by name: a shell line that exits 0 if it worked.
ATTACKS = {
    "sysrq": "mkdir -p /p && mount -t proc proc /p && echo h > /p/sysrq-trigger",
    "sysctl": "echo 1 > /p/sys/kernel/sysrq",
    "mknod": "mknod /dev/disk b 8 0",
    "hostname": "hostname taken-over",
    "link": "ip link add evil0 type dummy",
    "chown-rootfs": "touch /mine && chown 70000:70000 /mine",
    "chown-volume": "touch /cache/mine && chown 70000:70000 /cache/mine",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("usernsattack")) as vm_env:
        yield vm_env


def _run(env: VmEnv, container_id: str, script: str) -> tuple[int, str]:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    reply = env.runtime.ExecSync(request, timeout=120)
    return reply.exit_code, (reply.stdout + reply.stderr).decode(errors="replace")


def test_a_user_namespaced_root_with_every_capability_owns_nothing_of_the_guest(
    env: VmEnv, tmp_path: Path
) -> None:
    cache = tmp_path / "kubelet/pods/uid-attack/volumes/kubernetes.io~empty-dir/cache"
    cache.mkdir(parents=True, mode=0o777)
    sandbox_id, pod = env.run_pod("attack", linux=pod_linux())
    attacker = env.create(
        sandbox_id, pod, "attacker", ["sleep", "3600"],
        mounts=[pb.Mount(container_path="/cache", host_path=str(cache))],
        linux=container_linux(security=ATTACKER),
    )  # fmt: skip
    env.start(attacker)
    # It is root with every capability in its namespace: the attempts below are not
    # stopped by a missing capability but by whose namespace the target is.
    code, out = _run(env, attacker, "id -u; grep CapEff /proc/self/status")
    assert code == 0 and out.startswith("0\n") and "000001ffffffffff" in out, out

    worked = {name: _run(env, attacker, script) for name, script in ATTACKS.items()}
    for name, (code, out) in worked.items():
        assert code != 0, f"{name} worked: {out}"
    # Its own files it may still give to any ID its mapping has.
    assert _run(env, attacker, "chown 1000:1000 /mine /cache/mine") == (0, "")
    # The guest kept its name, and the pod answers.
    assert _run(env, attacker, "hostname") == (0, "attack\n")
    assert list(cache.iterdir()) == []
