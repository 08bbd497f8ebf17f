"""A VM pod with its own user namespace (kubelet's ``hostUsers: false``): real libvirt,
QEMU, guest kernel (Debian 12's 6.1), agent and runc.

The container is root in a user namespace whose IDs are the guest's 65536 and up: its
image's files are still root's to it (the guest ID-maps the erofs layers under the
overlay), it writes its rootfs and a disk emptyDir (ID-mapped ext4) and a memory emptyDir
(tmpfs, which 6.1 cannot ID-map: its top is given to the pod's root), and what it
writes is its root's; a copied configMap's files have the owners they have on the host.
A hostPath volume would reach the guest over the 9p share, which
cannot be ID-mapped: refused, naming the mount. With no share mounted, such a pod is
saved and restored whole.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.userns_pods import BASE, SIZE, container_linux, pod_linux
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("userns")) as vm_env:
        yield vm_env


def _exec(env: VmEnv, container_id: str, script: str) -> str:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=60)
    reply = env.runtime.ExecSync(request, timeout=120)
    assert reply.exit_code == 0, reply.stderr
    return str(reply.stdout.decode())


def _empty_dir(tmp: Path, name: str) -> Path:
    path = tmp / "kubelet" / "pods" / "uid-userns" / "volumes" / "kubernetes.io~empty-dir" / name
    path.mkdir(parents=True, mode=0o777)
    return path


def _config_map(tmp: Path, name: str, files: dict[str, str]) -> Path:
    """kubelet's layout of a configMap: ``..data`` -> a generation, a symlink per key."""
    path = tmp / "kubelet" / "pods" / "uid-userns" / "volumes" / "kubernetes.io~configmap" / name
    (path / "..gen1").mkdir(parents=True)
    for key, value in files.items():
        (path / "..gen1" / key).write_text(value)
        os.symlink(f"..data/{key}", path / key)
    os.symlink("..gen1", path / "..data")
    return path


def test_the_handler_announces_user_namespaces(env: VmEnv) -> None:
    status = env.runtime.Status(pb.StatusRequest(), timeout=30)
    vm = [h for h in status.runtime_handlers if h.name == "vm"]
    assert vm and vm[0].features.user_namespaces


def test_a_user_namespaced_vm_pod_sees_its_files_as_its_own(env: VmEnv, tmp_path: Path) -> None:
    cache = _empty_dir(tmp_path, "cache")
    memory = _empty_dir(tmp_path, "mem")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(memory)], check=True)
    try:
        linux = pod_linux()
        linux.sysctls["net.ipv4.tcp_keepalive_time"] = "600"
        sandbox_id, pod = env.run_pod("userns", linux=linux)
        config = _config_map(tmp_path, "app", {"a": "root's\n", "b": "user's\n"})
        os.chown(config / "..gen1" / "b", 1000, 1001)
        mounts = [
            pb.Mount(container_path="/cache", host_path=str(cache)),
            pb.Mount(container_path="/mem", host_path=str(memory)),
            pb.Mount(container_path="/config", host_path=str(config), readonly=True),
        ]
        cid = env.create(
            sandbox_id, pod, "app", ["sleep", "3600"], mounts=mounts, linux=container_linux()
        )
        env.start(cid)

        assert _exec(env, cid, "id -u; id -g") == "0\n0\n"
        assert _exec(env, cid, "cat /proc/self/uid_map").split() == ["0", str(BASE), str(SIZE)]
        assert _exec(env, cid, "cat /proc/self/gid_map").split() == ["0", str(BASE), str(SIZE)]
        # The image's files are root's, as the image says (not the overflow ID's).
        assert _exec(env, cid, "stat -c %u:%g /bin/busybox /etc") == "0:0\n0:0\n"
        # Its rootfs: new files and copied-up ones are its root's.
        script = "echo new >/made; stat -c %u:%g /made; echo >>/etc/passwd; stat -c %u /etc/passwd"
        assert _exec(env, cid, script) == "0:0\n0\n"
        assert _exec(env, cid, "chown 1000:1000 /made && stat -c %u:%g /made") == "1000:1000\n"
        # The emptyDirs, on the guest's ext4 disk and in a guest tmpfs.
        for top in ("/cache", "/mem"):
            out = _exec(env, cid, f"echo x > {top}/f && stat -c %u:%g {top}/f {top}")
            assert out == "0:0\n0:0\n", top
        assert list(cache.iterdir()) == [] and list(memory.iterdir()) == []
        # A copied configMap (guest tmpfs): its files are owned in the container as on the
        # host, as the runc handler's ID-mapped bind shows them.
        out = _exec(env, cid, "cat /config/a /config/b; stat -L -c %u:%g /config/a /config/b")
        assert out == "root's\nuser's\n0:0\n1000:1001\n"
        # ext4 is ID-mapped; tmpfs cannot be on 6.1 (its top is the pod root's instead).
        assert "idmapped" in _exec(env, cid, "grep ' /cache ' /proc/self/mountinfo")
        assert "idmapped" not in _exec(env, cid, "grep ' /mem ' /proc/self/mountinfo")
        # The guest's network namespace is the pod's: its root binds port 80 as on runc,
        # and the pod's sysctl is the guest's.
        assert _exec(env, cid, "httpd -p 80 && netstat -ltn | grep -c ':80 '") == "1\n"
        assert _exec(env, cid, "cat /proc/sys/net/ipv4/tcp_keepalive_time") == "600\n"

        # A hostPath volume would go over 9p: refused, naming the mount.
        outside = tmp_path / "host-data"
        outside.mkdir()
        with pytest.raises(grpc.RpcError) as refused:
            env.create(
                sandbox_id, pod, "shared", ["sleep", "3600"],
                mounts=[pb.Mount(container_path="/data", host_path=str(outside))],
                linux=container_linux(),
            )  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config.mounts[0]" in str(refused.value.details())
        assert "9p" in str(refused.value.details())
        # The pod still works after the refusal, and its container goes away cleanly
        # (the staged clones detached, never deleted through).
        assert _exec(env, cid, "cat /made") == "new\n"
        again = env.create(
            sandbox_id, pod, "again", ["sleep", "3600"], mounts=mounts, linux=container_linux()
        )
        env.start(again)
        assert _exec(env, again, "cat /cache/f") == "x\n"
        for gone in (cid, again):
            env.runtime.StopContainer(pb.StopContainerRequest(container_id=gone), timeout=60)
            env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=gone), timeout=60)
        env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        env.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
    finally:
        subprocess.run(["umount", str(memory)], check=False)


def test_a_user_namespaced_vm_pod_is_saved_and_restored(env: VmEnv, tmp_path: Path) -> None:
    """No share is mounted, so QEMU saves the pod; the restored container is still its
    user namespace's root, its ID-mapped rootfs and what it wrote as they were."""
    sandbox_id, pod = env.run_pod("userns-saved", linux=pod_linux())
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=env.image),
        command=["sleep", "3600"],
        log_path="app.log",
        linux=container_linux(),
    )
    cid = env.create(sandbox_id, pod, "app", ["sleep", "3600"], linux=container_linux())
    env.start(cid)
    _exec(env, cid, "echo kept > /made")
    out = tmp_path / "ckpt"
    out.mkdir()
    env.runtime.CheckpointPod(
        pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(out)), timeout=180
    )
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    restored_pod = pb.PodSandboxConfig()
    restored_pod.CopyFrom(pod)
    restored_pod.metadata.name = "userns-restored"
    restored_pod.metadata.uid = "uid-userns-restored"
    restored = env.runtime.RestorePod(
        pb.RestorePodRequest(path=str(out), config=restored_pod, container_configs=[config]),
        timeout=180,
    ).pod_sandbox_id
    env.sandboxes.append(restored)
    script = "id -u; cat /made; stat -c %u:%g /made /bin/busybox; cat /proc/self/uid_map"
    assert _exec(env, cid, script).split() == [
        "0", "kept", "0:0", "0:0", "0", str(BASE), str(SIZE),
    ]  # fmt: skip
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=restored), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=restored), timeout=120)
