"""kubelet's volumes that live in a VM pod's guest: real libvirt, QEMU, guest and agent.

One kubelet-shaped pod (its volumes laid out below ``<tmp>/kubelet/pods/<uid>/`` as kubelet
lays them): an emptyDir shared by two containers and kept across a container's restart, a
memory-medium emptyDir (a tmpfs on the host, so a tmpfs in the guest), a configMap copied in
and updated kubelet-style (a ``..data`` symlink swap) while a container reads it, the pod's
/etc/hosts, none of them on the share. The pod is then checkpointed (it mounts no share, so
QEMU saves it) and restored with configs whose host paths are the new pod's: its emptyDir
came back with the guest, its configMap is the new pod's, and a restarted daemon syncs on.
A container's termination-log lives in the guest and its message reaches kubelet's file. A
volume too big to copy goes to the share, and then the pod cannot be saved, the refusal
naming that volume.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

SLEEP = ["sleep", "3600"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    runc = '[runtimes.vm]\nbackend = "vm"\n[runtimes.runc]\nbackend = "runc"\n'
    with vm_daemon(tmp_path_factory.mktemp("gvol"), NO_POD_NETWORK + runc) as vm_env:
        yield vm_env


class KubeletPod:
    """A pod's volume directories as kubelet makes them."""

    def __init__(self, root: Path, uid: str) -> None:
        self.dir = root / "pods" / uid
        self.volumes = self.dir / "volumes"
        self.tmpfs: list[Path] = []

    def empty_dir(self, name: str, memory: bool = False) -> Path:
        path = self.volumes / "kubernetes.io~empty-dir" / name
        path.mkdir(parents=True, mode=0o777)
        if memory:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
                           check=True)  # fmt: skip
            self.tmpfs.append(path)
        return path

    def config_map(self, name: str, files: dict[str, str]) -> Path:
        path = self.volumes / "kubernetes.io~configmap" / name
        path.mkdir(parents=True)
        self.update(path, files, "..gen1")
        for key in files:
            os.symlink(f"..data/{key}", path / key)
        return path

    @staticmethod
    def update(path: Path, files: dict[str, str], gen: str) -> None:
        """kubelet's atomic writer: a new directory, then ``..data`` swapped to it."""
        (path / gen).mkdir()
        for key, value in files.items():
            (path / gen / key).write_text(value)
        os.symlink(gen, path / "..data_tmp")
        os.rename(path / "..data_tmp", path / "..data")

    def etc_hosts(self, text: str) -> Path:
        path = self.dir / "etc-hosts"
        path.write_text(text)
        return path

    def close(self) -> None:
        for path in self.tmpfs:
            subprocess.run(["umount", str(path)], check=False)


def _exec(env: VmEnv, container_id: str, script: str, timeout: int = 60) -> str:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script],
                                 timeout=timeout)  # fmt: skip
    reply = env.runtime.ExecSync(request, timeout=timeout + 60)
    assert reply.exit_code == 0, reply.stderr
    return str(reply.stdout.decode())


def _fs_type(env: VmEnv, container_id: str, path: str) -> str:
    """The file system type the container's /proc/mounts gives ``path``."""
    out = _exec(env, container_id, f"grep ' {path} ' /proc/mounts | tail -1")
    return out.split()[2] if out.split() else ""


def _config(env: VmEnv, name: str, mounts: list[pb.Mount]) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=env.image),
        command=SLEEP,
        log_path=f"{name}.log",
        mounts=mounts,
    )


def _create(
    env: VmEnv, sandbox_id: str, pod: pb.PodSandboxConfig, config: pb.ContainerConfig
) -> str:
    request = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
    )
    container_id: str = env.runtime.CreateContainer(request, timeout=120).container_id
    env.start(container_id)
    return container_id


def _pod_config(env: VmEnv, name: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname=name,
        log_directory=str(env.tmp / "logs" / name),
    )


def _mounts(
    kubelet: KubeletPod, config: Path, hosts: Path, cache: Path, memory: Path
) -> tuple[list[pb.Mount], list[pb.Mount]]:
    writer = [pb.Mount(container_path="/cache", host_path=str(cache))]
    reader = [
        pb.Mount(container_path="/cache", host_path=str(cache)),
        pb.Mount(container_path="/mem", host_path=str(memory)),
        pb.Mount(container_path="/config", host_path=str(config), readonly=True),
        pb.Mount(container_path="/etc/hosts", host_path=str(hosts)),
    ]
    return writer, reader


def test_a_kubelet_shaped_pod_keeps_its_volumes_in_the_guest_and_is_saved(
    env: VmEnv, tmp_path: Path
) -> None:
    kubelet = KubeletPod(tmp_path / "kubelet", "uid-one")
    try:
        _run(env, tmp_path, kubelet)
    finally:
        kubelet.close()


def _run(env: VmEnv, tmp_path: Path, kubelet: KubeletPod) -> None:
    cache = kubelet.empty_dir("cache")
    memory = kubelet.empty_dir("scratch", memory=True)
    config = kubelet.config_map("app", {"a": "v1\n", "b": "v1\n"})
    hosts = kubelet.etc_hosts("127.0.0.1 localhost\n10.9.9.9 pinned.example\n")
    writer_mounts, reader_mounts = _mounts(kubelet, config, hosts, cache, memory)
    pod = _pod_config(env, "kube")
    sandbox_id = env.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod, runtime_handler="vm"), timeout=300
    ).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    writer = _create(env, sandbox_id, pod, _config(env, "writer", writer_mounts))
    reader = _create(env, sandbox_id, pod, _config(env, "reader", reader_mounts))

    # The emptyDir: one directory of the pod's, on its guest disk (not 9p), shared by both
    # containers; nothing of it on the host.
    _exec(env, writer, "echo shared > /cache/note")
    assert _exec(env, reader, "cat /cache/note") == "shared\n"
    assert _fs_type(env, reader, "/cache") not in ("9p", "virtiofs", "")
    assert list(cache.iterdir()) == []
    # Medium Memory: a tmpfs in the guest.
    assert _fs_type(env, reader, "/mem") == "tmpfs"
    _exec(env, reader, "echo in-memory > /mem/x")
    assert list(memory.iterdir()) == []
    # The configMap and /etc/hosts: copies, read-only where kubelet said so.
    assert _exec(env, reader, "cat /config/a /config/b") == "v1\nv1\n"
    assert _fs_type(env, reader, "/config") == "tmpfs"
    assert "pinned.example" in _exec(env, reader, "cat /etc/hosts")
    assert _fs_type(env, reader, "/etc/hosts") != "9p"
    denied = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=reader, cmd=["sh", "-c", "echo x > /config/a"],
                           timeout=30), timeout=90,
    )  # fmt: skip
    assert denied.exit_code != 0

    # An update, kubelet-style, while the reader reads both keys from one ..data again and
    # again: the guest swaps generations as kubelet does, so it never sees v2 and v1 mixed.
    watch = (
        "touch /cache/looping; i=0; first=; while [ $i -lt 20000 ]; do cd /config/..data;"
        ' read a < a; read b < b; cd /; [ -n "$first" ] || first=$a;'
        ' [ "$a" = "$b" ] || echo MIX $a $b; [ "$a" = v2 ] && break; i=$((i+1)); done;'
        " echo first=$first last=$a"
    )
    seen: list[str] = []
    reading = threading.Thread(target=lambda: seen.append(_exec(env, reader, watch, 120)))
    reading.start()
    wait_for(lambda: _exec(env, writer, "test -e /cache/looping && echo y || true") == "y\n",
             timeout=60, what="the reader's loop to run")  # fmt: skip
    changed = time.monotonic()
    kubelet.update(config, {"a": "v2\n", "b": "v2\n"}, "..gen2")
    wait_for(lambda: _exec(env, reader, "cat /config/a /config/b") == "v2\nv2\n",
             timeout=30, what="the configMap update in the guest")  # fmt: skip
    delay = time.monotonic() - changed
    reading.join(150)
    assert seen and seen[0].endswith("first=v1 last=v2\n") and "MIX" not in seen[0], seen
    print(f"configMap update reached the guest in {delay:.2f} s")
    assert delay < 15

    # The termination-log lives in the guest too; its message reaches kubelet's host file
    # when the container ends.
    log = kubelet.dir / "containers" / "quitter" / "5eed"
    log.parent.mkdir(parents=True)
    log.touch(mode=0o666)
    quits = pb.Mount(container_path="/dev/termination-log", host_path=str(log))
    quitter = _config(env, "quitter", [quits])
    quitter.command[:] = ["sh", "-c", "grep -c ' /dev/termination-log 9p' /proc/mounts;"
                          " echo goodbye > /dev/termination-log; exit 3"]  # fmt: skip
    quitter_id = _create(env, sandbox_id, pod, quitter)
    wait_for(lambda: env.status(quitter_id).state == pb.CONTAINER_EXITED, 60, "the quitter")
    assert env.status(quitter_id).exit_code == 3
    assert log.read_text() == "goodbye\n"
    assert env.log_of("kube", "quitter").split()[-1] == "0"  # not on the share
    env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=quitter_id), timeout=60)

    # A container restarted (removed and made again, as kubelet does) finds the emptyDir.
    env.runtime.StopContainer(pb.StopContainerRequest(container_id=writer, timeout=0), timeout=60)
    env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=writer), timeout=60)
    writer = _create(env, sandbox_id, pod, _config(env, "writer", writer_mounts))
    assert _exec(env, writer, "cat /cache/note") == "shared\n"

    # No share mounted: the pod is saved whole, and restored with the new pod's host paths.
    out = tmp_path / "ckpt"
    out.mkdir()
    env.runtime.CheckpointPod(
        pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(out)), timeout=180
    )
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    other = KubeletPod(tmp_path / "kubelet", "uid-two")
    try:
        new_config = other.config_map("app", {"a": "v3\n", "b": "v3\n"})
        new_hosts = other.etc_hosts("127.0.0.1 localhost\n")
        new_writer, new_reader = _mounts(
            other, new_config, new_hosts, other.empty_dir("cache"), other.empty_dir("scratch", True)
        )
        new_pod = _pod_config(env, "kube-restored")
        restored = env.runtime.RestorePod(
            pb.RestorePodRequest(
                path=str(out),
                config=new_pod,
                container_configs=[
                    _config(env, "writer", new_writer),
                    _config(env, "reader", new_reader),
                ],
            ),
            timeout=180,
        ).pod_sandbox_id
        env.sandboxes.append(restored)
        assert _exec(env, reader, "cat /cache/note /mem/x") == "shared\nin-memory\n"
        wait_for(lambda: _exec(env, reader, "cat /config/a") == "v3\n", timeout=30,
                 what="the restored pod's configMap from its own host path")  # fmt: skip

        # A killed and restarted daemon syncs on (the pod's list is in its state dir).
        env.restart(kill=True)
        other.update(new_config, {"a": "v4\n", "b": "v4\n"}, "..gen2")
        wait_for(lambda: _exec(env, reader, "cat /config/a") == "v4\n", timeout=30,
                 what="an update after a daemon restart")  # fmt: skip

        # A volume too big to copy goes to the share; the pod can no longer be saved, and
        # the refusal names that volume.
        big = other.config_map("big", {f"k{i}": "x\n" for i in range(40)})
        mounts = [pb.Mount(container_path="/big", host_path=str(big), readonly=True)]
        holder = _create(env, restored, new_pod, _config(env, "big", mounts))
        assert _fs_type(env, holder, "/big") == "9p"
        assert _exec(env, holder, "cat /big/k39") == "x\n"
        again = tmp_path / "again"
        again.mkdir()
        with pytest.raises(grpc.RpcError) as info:
            env.runtime.CheckpointPod(
                pb.CheckpointPodRequest(pod_sandbox_id=restored, path=str(again)), timeout=180
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = str(info.value.details())
        assert f"mounts '/big' (host path '{big}')" in details
        assert "/config" not in details  # the copied ones block nothing
        env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=restored), timeout=120)
        env.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=restored), timeout=120
        )
    finally:
        other.close()


@pytest.mark.parametrize("handler", ["vm", "runc"])
def test_a_termination_message_reaches_kubelets_file(
    env: VmEnv, tmp_path: Path, handler: str
) -> None:
    """What a container writes to its termination-log is in kubelet's host file once it has
    ended, on both handlers (in a VM pod, carried back in the agent's exit event), at the
    path kubelet's annotation names."""
    kubelet = KubeletPod(tmp_path / "kubelet", f"uid-{handler}")
    log = kubelet.dir / "containers" / "ender" / "0ff1ce"
    log.parent.mkdir(parents=True)
    log.touch(mode=0o666)
    pod = _pod_config(env, f"ends-{handler}")
    sandbox_id = env.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod, runtime_handler=handler), timeout=300
    ).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    config = _config(env, "ender", [pb.Mount(container_path="/tmp/why", host_path=str(log))])
    config.annotations["io.kubernetes.container.terminationMessagePath"] = "/tmp/why"
    config.command[:] = ["sh", "-c", "echo out of work > /tmp/why; exit 1"]
    ender = _create(env, sandbox_id, pod, config)
    wait_for(lambda: env.status(ender).state == pb.CONTAINER_EXITED, 60, "the container's end")
    assert log.read_text() == "out of work\n"
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
