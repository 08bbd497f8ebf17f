"""CheckpointPod of a VM pod through the real daemon and real QEMU.

A pod whose containers have no volume is saved whole while it runs: the migration
stream and the writable disk land in the checkpoint, private to root, and the pod counts
on. Once a container mounts a volume (the guest then mounts the pod's 9p share, which
QEMU will not migrate), CheckpointPod is refused FAILED_PRECONDITION naming the volume,
nothing is written, and the pod was never paused.
"""

from __future__ import annotations

import itertools
import json
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, vm_daemon

pytestmark = pytest.mark.integration

COUNTER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("vmckpt")) as vm_env:
        yield vm_env


def _count(env: VmEnv, pod: str, name: str = "counter") -> int:
    lines = [line.split()[-1] for line in env.log_of(pod, name).splitlines() if line]
    return int(lines[-1]) if lines else 0


def _counts_on(env: VmEnv, pod: str) -> None:
    seen = _count(env, pod)
    wait_for(lambda: _count(env, pod) > seen + 1, timeout=60, what="the counter to go on")


def _checkpoint(env: VmEnv, sandbox_id: str, path: Path) -> None:
    env.runtime.CheckpointPod(
        pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(path)), timeout=180
    )


def test_a_vm_pod_without_volumes_is_saved_whole_while_it_runs(env: VmEnv, tmp_path: Path) -> None:
    sandbox_id, pod = env.run_pod("saved")
    container = env.create(sandbox_id, pod, "counter", COUNTER)
    env.start(container)
    wait_for(lambda: _count(env, "saved") >= 2, timeout=60, what="the counter to count")

    _checkpoint(env, sandbox_id, tmp_path)

    saved = tmp_path / "vmcri-checkpoint"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o700
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["backend"] == "vm" and manifest["pod_id"] == sandbox_id
    assert [c["name"] for c in manifest["containers"]] == ["counter"]
    files = {entry["name"]: entry["size"] for entry in manifest["files"]}
    # The guest's memory in use (far below its RAM: zero pages cost a flag) and its
    # writable disk's data, nothing else of the host.
    assert files["vm-state.migration"] > 1 << 20
    assert any(name.startswith("disk-") and name.endswith(".extents") for name in files)
    for path in saved.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.name == "manifest.json" or path.name in files, path

    # RUNNING after it: the same guest counts on, and answers an exec.
    _counts_on(env, "saved")
    assert env.status(container).state == pb.CONTAINER_RUNNING
    reply = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container, cmd=["echo", "still-here"], timeout=30),
        timeout=60,
    )
    assert reply.exit_code == 0 and reply.stdout == b"still-here\n"

    archive = tmp_path / "counter.tar"
    env.runtime.CheckpointContainer(
        pb.CheckpointContainerRequest(container_id=container, location=str(archive)), timeout=180
    )
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "container.json" in names and "pod/manifest.json" in names
    _counts_on(env, "saved")
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)


def test_a_vm_pod_whose_container_mounts_a_volume_is_refused_naming_it_and_counts_on(
    env: VmEnv, tmp_path: Path
) -> None:
    sandbox_id, pod = env.run_pod("counter")
    container = env.create(sandbox_id, pod, "counter", COUNTER)
    env.start(container)
    volume = tmp_path / "volume"
    volume.mkdir()
    mount = pb.Mount(container_path="/data", host_path=str(volume), readonly=True)
    reader = env.create(sandbox_id, pod, "reader", ["sleep", "600"], mounts=[mount])
    env.start(reader)
    wait_for(lambda: _count(env, "counter") >= 2, timeout=60, what="the counter to count")
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(grpc.RpcError) as info:
        _checkpoint(env, sandbox_id, out)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = str(info.value.details())
    assert "VirtFS export path" in details  # QEMU's own reason
    assert f"container 'reader' mounts '/data' (host path '{volume}')" in details
    assert list(out.iterdir()) == []

    with pytest.raises(grpc.RpcError) as info:
        env.runtime.CheckpointContainer(
            pb.CheckpointContainerRequest(container_id=container, location=str(out / "c.tar")),
            timeout=120,
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert list(out.iterdir()) == []

    # The pod was never paused for nothing: it still runs and counts on.
    _counts_on(env, "counter")
    assert env.status(container).state == pb.CONTAINER_RUNNING
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)


# Two processes of one pod, in two containers, joined by a TCP connection over the pod's
# loopback: the counter writes each number to its log and down the connection, the
# server logs what it reads. Nothing of either survives a restore unless the guest's
# kernel (its sockets, pipes and processes) does.
SERVER = [
    "busybox", "nc", "-l", "-p", "7000", "-e",
    "sh", "-c", "while read n; do echo got $n >&2; done",
]  # fmt: skip
SENDER = [
    "sh",
    "-c",
    "until busybox nc 127.0.0.1 7000 -e sh -c"
    " 'i=0; while true; do i=$((i+1)); echo $i >&2; echo $i; sleep 0.2; done';"
    " do sleep 0.2; done",
]


def _received(env: VmEnv, pod: str) -> list[int]:
    return [
        int(line.split()[-1]) for line in env.log_of(pod, "server").splitlines() if "got" in line
    ]


def _runs_on(got: list[int], *checkpoints: int) -> None:
    """The old log's newest part, then what the restored pod received: one rising run of
    numbers, each once, never starting again at 1 (a fresh connection would). A number
    the guest sent in a checkpoint's last moment is in the original pod's log, not in the
    copy: at most one short gap per checkpoint, at or before the number it had reached."""
    assert got == sorted(set(got)), got
    gaps = [(a, b) for a, b in itertools.pairwise(got) if b != a + 1]
    assert len(gaps) <= len(checkpoints), got
    for (a, b), at in zip(gaps, sorted(checkpoints), strict=False):
        assert b - a <= 4 and a <= at, got


def _configs(env: VmEnv, pod: pb.PodSandboxConfig) -> list[pb.ContainerConfig]:
    return [
        pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=env.image),
            command=command,
            log_path=f"{name}.log",
        )
        for name, command in (("server", SERVER), ("sender", SENDER))
    ]


def _new_pod(env: VmEnv, name: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname="talk",
        log_directory=str(env.tmp / "logs" / name),
    )


def test_a_restored_vm_pod_runs_on_with_its_processes_and_in_pod_connection(
    env: VmEnv, tmp_path: Path
) -> None:
    sandbox_id, pod = env.run_pod("talk")
    ids = []
    for config in _configs(env, pod):
        created = env.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod),
            timeout=120,
        )
        env.start(created.container_id)
        ids.append(created.container_id)
    wait_for(lambda: len(_received(env, "talk")) >= 3, timeout=60, what="the server to receive")

    _checkpoint(env, sandbox_id, tmp_path)
    at_checkpoint = _received(env, "talk")[-1]
    # Its containers keep their IDs in the restored pod: not here while the original is.
    pods_before = len(env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items)
    with pytest.raises(grpc.RpcError) as info:
        env.runtime.RestorePod(
            pb.RestorePodRequest(
                path=str(tmp_path),
                config=_new_pod(env, "talk-early"),
                container_configs=_configs(env, _new_pod(env, "talk-early")),
            ),
            timeout=180,
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "still on this node" in str(info.value.details())
    assert len(env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items) == (
        pods_before
    )
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    new_pod = _new_pod(env, "talk-restored")
    restored = env.runtime.RestorePod(
        pb.RestorePodRequest(
            path=str(tmp_path), config=new_pod, container_configs=_configs(env, new_pod)
        ),
        timeout=180,
    ).pod_sandbox_id
    env.sandboxes.append(restored)
    assert restored != sandbox_id and env.pod_state(restored) == pb.SANDBOX_READY
    listed = env.runtime.ListContainers(
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=restored)), timeout=30
    ).containers
    assert sorted(c.id for c in listed) == sorted(ids)
    assert all(c.state == pb.CONTAINER_RUNNING for c in listed)

    # The same processes and the same connection: the numbers go on from the checkpoint's,
    # never starting again at 1, into the new pod's log directory.
    wait_for(
        lambda: (
            len(_received(env, "talk-restored")) > 0
            and _received(env, "talk-restored")[-1] > at_checkpoint + 3
        ),
        timeout=90,
        what="the restored server to receive more",
    )
    _runs_on(_received(env, "talk-restored"), at_checkpoint)

    reply = env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=ids[0], cmd=["hostname"], timeout=30), timeout=60
    )
    assert reply.exit_code == 0 and reply.stdout == b"talk\n"

    # A restored pod is a pod like any other: checkpointed and restored once more.
    again = tmp_path / "again"
    again.mkdir()
    _checkpoint(env, restored, again)
    at_second = _received(env, "talk-restored")[-1]
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=restored), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=restored), timeout=120)
    newest = _new_pod(env, "talk-again")
    twice = env.runtime.RestorePod(
        pb.RestorePodRequest(
            path=str(again), config=newest, container_configs=_configs(env, newest)
        ),
        timeout=180,
    ).pod_sandbox_id
    env.sandboxes.append(twice)
    wait_for(
        lambda: (
            bool(_received(env, "talk-again")) and _received(env, "talk-again")[-1] > at_second + 3
        ),
        timeout=90,
        what="the twice-restored server to receive more",
    )
    _runs_on(_received(env, "talk-again"), at_checkpoint, at_second)
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=twice), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=twice), timeout=120)


def test_a_vm_pod_checkpoint_restores_on_another_node(
    env: VmEnv, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Another daemon with its own root, state and registry, the image not pulled there:
    the checkpoint directory copied there restores, its processes and connection running
    on."""
    sandbox_id, pod = env.run_pod("travel")
    for config in _configs(env, pod):
        created = env.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod),
            timeout=120,
        )
        env.start(created.container_id)
    wait_for(lambda: len(_received(env, "travel")) >= 3, timeout=60, what="the server to receive")
    (tmp_path / "here").mkdir()
    _checkpoint(env, sandbox_id, tmp_path / "here")  # RUNNING: the original runs on
    at_checkpoint = _received(env, "travel")[-1]
    shutil.copytree(tmp_path / "here", tmp_path / "there")

    with vm_daemon(tmp_path_factory.mktemp("othernode"), wait_template=False) as other:
        # Not pulled there: RestorePod pulls it (without credentials) before it restores.
        spec = pb.ImageSpec(image=other.image)
        other.daemon.images().RemoveImage(pb.RemoveImageRequest(image=spec), timeout=60)
        new_pod = _new_pod(other, "travel")
        restored = other.runtime.RestorePod(
            pb.RestorePodRequest(
                path=str(tmp_path / "there"),
                config=new_pod,
                container_configs=_configs(other, new_pod),
            ),
            timeout=180,
        ).pod_sandbox_id
        other.sandboxes.append(restored)
        wait_for(
            lambda: (
                len(_received(other, "travel")) > 0
                and _received(other, "travel")[-1] > at_checkpoint + 3
            ),
            timeout=90,
            what="the other node's server to receive more",
        )
        _runs_on(_received(other, "travel"), at_checkpoint)
        status = other.daemon.images().ImageStatus(pb.ImageStatusRequest(image=spec), timeout=30)
        assert status.image.id
    # The original pod never stopped.
    seen = _received(env, "travel")[-1]
    wait_for(lambda: _received(env, "travel")[-1] > seen, timeout=60, what="the original")
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)


# No templates: every pod cold-boots. 9p for volumes: a virtio-fs device cannot be saved.
COLD_ONLY = NO_POD_NETWORK + (
    '[runtimes.vm]\nbackend = "vm"\n[runtimes.vm.options]\ntemplate = "off"\nshared_fs = "9p"\n'
)


def test_a_cold_booted_vm_pod_checkpoint_restores(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Without templates every VM is cold-booted: its checkpoint loads into a cold boot's
    design (RAM, devices and NIC as booted), and runs on."""
    with vm_daemon(tmp_path_factory.mktemp("cold"), COLD_ONLY, wait_template=False) as cold:
        sandbox_id, pod = cold.run_pod("cold")
        assert cold.started_as(sandbox_id) == "cold"
        for config in _configs(cold, pod):
            created = cold.runtime.CreateContainer(
                pb.CreateContainerRequest(
                    pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod
                ),
                timeout=120,
            )
            cold.start(created.container_id)
        wait_for(lambda: len(_received(cold, "cold")) >= 3, timeout=60, what="the server")
        _checkpoint(cold, sandbox_id, tmp_path)
        at_checkpoint = _received(cold, "cold")[-1]
        cold.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
        cold.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
        new_pod = _new_pod(cold, "cold-restored")
        request = pb.RestorePodRequest(
            path=str(tmp_path), config=new_pod, container_configs=_configs(cold, new_pod)
        )
        restored = cold.runtime.RestorePod(request, timeout=180).pod_sandbox_id
        cold.sandboxes.append(restored)
        assert cold.started_as(restored) == "checkpoint"
        wait_for(
            lambda: (
                bool(_received(cold, "cold-restored"))
                and _received(cold, "cold-restored")[-1] > at_checkpoint + 3
            ),
            timeout=90,
            what="the restored server to receive more",
        )
        _runs_on(_received(cold, "cold-restored"), at_checkpoint)


MIB = 1 << 20


def _limits(memory_mib: int) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=100000, cpu_quota=100000, memory_limit_in_bytes=memory_mib * MIB
    )


def _size(env: VmEnv, sandbox_id: str) -> tuple[int, int]:
    facts = env.runtime_info(sandbox_id)
    return int(facts["memory_mib"]), int(facts["vcpus"])


def _mem_total(env: VmEnv, container_id: str) -> int:
    request = pb.ExecSyncRequest(
        container_id=container_id, cmd=["sh", "-c", "grep MemTotal /proc/meminfo"], timeout=60
    )
    return int(env.runtime.ExecSync(request, timeout=90).stdout.split()[1]) * 1024


def test_a_grown_vm_pod_restores_at_its_size_and_grows_on(env: VmEnv, tmp_path: Path) -> None:
    """A container above the VM's boot size grew it (virtio-mem memory): the restored pod
    is that size, as the guest is, reports it, and grows from there."""
    sandbox_id, pod = env.run_pod("grown")
    linux = pb.LinuxContainerConfig(resources=_limits(600))
    app = env.create(sandbox_id, pod, "app", ["sleep", "1000"], linux=linux)
    env.start(app)
    grown = _size(env, sandbox_id)
    assert grown[0] > 600  # its memory grew (virtio-mem) for the container's limit
    total = _mem_total(env, app)
    _checkpoint(env, sandbox_id, tmp_path)
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)

    new_pod = _new_pod(env, "grown-restored")
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=env.image),
        command=["sleep", "1000"],
        log_path="app.log",
        linux=linux,
    )
    request = pb.RestorePodRequest(path=str(tmp_path), config=new_pod, container_configs=[config])
    restored = env.runtime.RestorePod(request, timeout=180).pod_sandbox_id
    env.sandboxes.append(restored)
    assert _size(env, restored) == grown
    assert _mem_total(env, app) == total
    stats = env.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=app), timeout=60)
    assert stats.stats.memory.working_set_bytes.value > 0

    env.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=app, linux=_limits(900)), timeout=120
    )
    assert _size(env, restored) == (grown[0] + 300, grown[1])
    assert _mem_total(env, app) - total == 300 * MIB
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=restored), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=restored), timeout=120)


def test_two_pods_restored_from_one_checkpoint_do_not_share_randomness(
    env: VmEnv, tmp_path: Path
) -> None:
    """Both guests start from the very same kernel state, its random number generator's
    included: each sees a new VM generation ID and reseeds, so their first random bytes
    after the restore differ."""
    sandbox_id, pod = env.run_pod("seed")
    app = env.create(sandbox_id, pod, "app", ["sleep", "1000"])
    env.start(app)
    _checkpoint(env, sandbox_id, tmp_path)
    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    draws = []
    for name in ("seed-a", "seed-b"):
        new_pod = _new_pod(env, name)
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="app"),
            image=pb.ImageSpec(image=env.image),
            command=["sleep", "1000"],
        )
        request = pb.RestorePodRequest(
            path=str(tmp_path), config=new_pod, container_configs=[config]
        )
        restored = env.runtime.RestorePod(request, timeout=180).pod_sandbox_id
        env.sandboxes.append(restored)
        draw = pb.ExecSyncRequest(
            container_id=app,
            cmd=["sh", "-c", "busybox head -c 32 /dev/urandom | busybox od -An -tx1"],
            timeout=60,
        )
        reply = env.runtime.ExecSync(draw, timeout=90)
        assert reply.exit_code == 0 and len(reply.stdout.split()) == 32
        draws.append(reply.stdout)
        stop = pb.StopPodSandboxRequest(pod_sandbox_id=restored)
        env.runtime.StopPodSandbox(stop, timeout=120)
        remove = pb.RemovePodSandboxRequest(pod_sandbox_id=restored)
        env.runtime.RemovePodSandbox(remove, timeout=120)
    assert draws[0] != draws[1]
