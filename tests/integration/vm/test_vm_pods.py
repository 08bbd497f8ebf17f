"""VM pods end to end: real libvirtd + QEMU, the real guest image, a real registry."""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import mount_points

from .conftest import RESTORED, VmEnv, destroy_domain, domain_exists

pytestmark = pytest.mark.integration


def test_pod_runs_a_container_that_logs_execs_reports_stats_and_goes_away(vm_env: VmEnv) -> None:
    sandbox_id, pod = vm_env.run_pod("web")
    assert domain_exists(sandbox_id)
    assert vm_env.pod_state(sandbox_id) == pb.SANDBOX_READY
    assert vm_env.started_as(sandbox_id) == RESTORED  # from the template or the pool (conftest)
    status = vm_env.runtime.Status(pb.StatusRequest(), timeout=30)
    assert any(h.name == "vm" for h in status.runtime_handlers)

    cid = vm_env.create(
        sandbox_id,
        pod,
        "app",
        ["/bin/sh", "-c", "echo hello from the guest; echo oops >&2; exec sleep 1000"],
    )
    vm_env.start(cid)
    assert vm_env.status(cid).state == pb.CONTAINER_RUNNING
    wait_for(lambda: "hello from the guest" in vm_env.log_of("web", "app"), 30, "stdout in the log")
    wait_for(lambda: " stderr F oops" in vm_env.log_of("web", "app"), 30, "stderr in the log")
    line = vm_env.log_of("web", "app").splitlines()[0]
    timestamp, stream, tag, _text = line.split(" ", 3)
    assert timestamp.endswith("Z") and (stream, tag) in {("stdout", "F"), ("stderr", "F")}

    result = vm_env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "hostname; exit 3"], timeout=60),
        timeout=90,
    )
    assert result.stdout == b"web\n" and result.exit_code == 3

    stats = vm_env.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid), timeout=30)
    assert stats.stats.memory.working_set_bytes.value > 0
    assert stats.stats.cpu.usage_core_nano_seconds.value > 0
    pod_stats = vm_env.runtime.PodSandboxStats(
        pb.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id), timeout=30
    )
    assert [c.attributes.id for c in pod_stats.stats.linux.containers] == [cid]

    # Block I/O of the container's cgroup in the guest (io.stat), with cAdvisor's labels.
    # Its rootfs is an overlay over the pod's disks (layers read-only, the writable one
    # below its upper dir): what it writes there is block I/O of its own, on that disk.
    keys = {
        d.name: list(d.label_keys)
        for d in vm_env.runtime.ListMetricDescriptors(
            pb.ListMetricDescriptorsRequest(), timeout=30
        ).descriptors
    }
    assert keys["container_blkio_device_usage_total"][6:] == [
        "device", "major", "minor", "operation"
    ]  # fmt: skip
    write = ["dd", "if=/dev/zero", "of=/blk", "bs=64k", "count=16", "conv=fsync"]
    wrote = vm_env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=write, timeout=60), timeout=90
    )
    assert wrote.exit_code == 0, wrote.stderr
    # The writable layer is on a disk only the guest mounts: the agent measures it there.
    layer = vm_env.runtime.ContainerStats(
        pb.ContainerStatsRequest(container_id=cid), timeout=30
    ).stats.writable_layer
    assert layer.used_bytes.value >= 1 << 20 and layer.inodes_used.value >= 1, layer  # /blk
    response = vm_env.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=30)
    [metrics] = [m for m in response.pod_metrics if m.pod_sandbox_id == sandbox_id]
    [container] = metrics.container_metrics
    names = {m.name for m in container.metrics}
    assert "container_fs_writes_bytes_total" in names
    assert "container_blkio_device_usage_total" in names

    vm_env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
    stopped = vm_env.status(cid)
    assert stopped.state == pb.CONTAINER_EXITED
    assert stopped.exit_code == 143 and stopped.reason == "Error"  # sleep dies of SIGTERM

    # The VM belongs to the pod: a new container after the last one is removed.
    vm_env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    second = vm_env.create(sandbox_id, pod, "again", ["/bin/sh", "-c", "echo second; exit 0"])
    vm_env.start(second)
    wait_for(lambda: vm_env.status(second).state == pb.CONTAINER_EXITED, 60, "second exit")
    done = vm_env.status(second)
    assert done.exit_code == 0 and done.reason == "Completed"
    assert "second" in vm_env.log_of("web", "again")

    vm_env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    assert not domain_exists(sandbox_id)
    assert vm_env.pod_state(sandbox_id) == pb.SANDBOX_NOTREADY
    vm_env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    vm_env.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
    )
    vm_env.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
    )
    assert not vm_env.state_dir(sandbox_id).exists()
    assert mount_points(vm_env.state_dir(sandbox_id)) == []
    listed = vm_env.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
    assert sandbox_id not in [s.id for s in listed]


def test_bad_container_leaves_nothing_and_oom_is_reported(vm_env: VmEnv) -> None:
    sandbox_id, pod = vm_env.run_pod("edge")
    mount = pb.Mount(container_path="/data", host_path=str(vm_env.tmp / "no-such-dir"))
    with pytest.raises(grpc.RpcError) as info:
        vm_env.create(sandbox_id, pod, "bad", ["true"], mounts=[mount])
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "mounts[0].host_path" in str(info.value.details())
    containers = vm_env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
    assert [c for c in containers.containers if c.pod_sandbox_id == sandbox_id] == []
    assert list((vm_env.state_dir(sandbox_id) / "share").rglob("*")) in (
        [],
        [vm_env.state_dir(sandbox_id) / "share" / "containers"],
    )

    shared = vm_env.tmp / "volume"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host")
    hog = vm_env.create(
        sandbox_id,
        pod,
        "hog",
        ["/bin/sh", "-c", "cat /data/in.txt; tail /dev/zero"],
        mounts=[pb.Mount(container_path="/data", host_path=str(shared), readonly=True)],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=32 * 1024 * 1024)
        ),
    )
    vm_env.start(hog)
    wait_for(lambda: vm_env.status(hog).state == pb.CONTAINER_EXITED, 120, "the OOM kill")
    status = vm_env.status(hog)
    assert status.reason == "OOMKilled" and status.exit_code == 137
    assert "from the host" in vm_env.log_of("edge", "hog")

    # An image volume: the pulled image itself, read-only, whole and by sub-path.
    viewer = vm_env.create(
        sandbox_id,
        pod,
        "viewer",
        [
            "/bin/sh",
            "-c",
            "test -x /img/bin/busybox && echo img-ok; test -x /sub/busybox && echo sub-ok; "
            "touch /img/x 2>/dev/null || echo ro-ok",
        ],
        mounts=[
            pb.Mount(container_path="/img", image=pb.ImageSpec(image=vm_env.image), readonly=True),
            pb.Mount(
                container_path="/sub",
                image=pb.ImageSpec(image=vm_env.image),
                image_sub_path="bin",
                readonly=True,
            ),
        ],
    )
    vm_env.start(viewer)
    wait_for(lambda: vm_env.status(viewer).state == pb.CONTAINER_EXITED, 60, "the viewer")
    log = vm_env.log_of("edge", "viewer")
    assert "img-ok" in log and "sub-ok" in log and "ro-ok" in log, log
    vm_env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=viewer), timeout=60)
    assert mount_points(vm_env.state_dir(sandbox_id) / "share" / "containers" / viewer) == []


def test_volumes_on_two_host_filesystems_keep_distinct_inodes_in_the_guest(
    vm_env: VmEnv,
) -> None:
    # Two fresh tmpfs number their files alike; through one 9p share the guest would see
    # /a/f and /b/f as the same inode (tar, cp -a and du take them for hard links) unless
    # QEMU remaps inode numbers per host device (multidevs=remap)
    volumes = [vm_env.tmp / "inodes" / name for name in ("a", "b")]
    for volume in volumes:
        volume.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", volume], check=True)
    try:
        for volume in volumes:
            (volume / "f").write_text(f"{volume.name}\n")
        assert len({os.stat(volume / "f").st_ino for volume in volumes}) == 1  # alike on host
        sandbox_id, pod = vm_env.run_pod("inodes")
        mounts = [pb.Mount(container_path=f"/{v.name}", host_path=str(v)) for v in volumes]
        cid = vm_env.create(sandbox_id, pod, "stat", ["sleep", "1000"], mounts=mounts)
        vm_env.start(cid)
        probe = "stat -c %i /a /b /a/f /b/f && cat /a/f /b/f"
        result = vm_env.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", probe], timeout=60), timeout=90
        )
        assert result.exit_code == 0, result.stderr
        *inodes, content_a, content_b = result.stdout.decode().split()
        assert len(set(inodes)) == 4, inodes
        assert (content_a, content_b) == ("a", "b")
        vm_env.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
        vm_env.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
    finally:
        for volume in volumes:
            subprocess.run(["umount", volume], check=False)


def test_vm_killed_from_outside_is_detected(vm_env: VmEnv) -> None:
    sandbox_id, pod = vm_env.run_pod("doomed")
    cid = vm_env.create(sandbox_id, pod, "sleeper", ["sleep", "1000"])
    vm_env.start(cid)
    destroy_domain(sandbox_id)
    wait_for(lambda: vm_env.pod_state(sandbox_id) == pb.SANDBOX_NOTREADY, 30, "NOTREADY")
    wait_for(lambda: vm_env.status(cid).state == pb.CONTAINER_EXITED, 30, "container exit")
    status = vm_env.status(cid)
    assert status.exit_code == 137 and "VM" in status.message
    vm_env.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
    )
    assert not vm_env.state_dir(sandbox_id).exists()


def test_daemon_kill9_and_restart_keeps_the_pod(vm_env: VmEnv) -> None:
    sandbox_id, pod = vm_env.run_pod("survivor")
    cid = vm_env.create(
        sandbox_id,
        pod,
        "ticker",
        ["/bin/sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
    )
    vm_env.start(cid)
    wait_for(lambda: "tick 1" in vm_env.log_of("survivor", "ticker"), 60, "first ticks")
    vm_env.restart(kill=True)
    assert domain_exists(sandbox_id)
    assert vm_env.pod_state(sandbox_id) == pb.SANDBOX_READY
    assert vm_env.status(cid).state == pb.CONTAINER_RUNNING
    before = vm_env.log_of("survivor", "ticker").count("tick")
    wait_for(
        lambda: vm_env.log_of("survivor", "ticker").count("tick") > before + 1,
        60,
        "ticks after the restart",
    )
    result = vm_env.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["echo", "still here"], timeout=60), timeout=90
    )
    assert result.stdout == b"still here\n"
    vm_env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
    assert vm_env.status(cid).state == pb.CONTAINER_EXITED


def test_a_process_the_image_cannot_run_and_teardowns_of_ids_of_any_shape(
    vm_env: VmEnv,
) -> None:
    sandbox_id, pod = vm_env.run_pod("refusals")
    with pytest.raises(grpc.RpcError) as info:
        vm_env.create(sandbox_id, pod, "nope", ["/no/such/binary"])
    # The guest's runc refused it because of the image: named, and not INTERNAL.
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    assert "'/no/such/binary' does not exist in the image" in str(info.value.details())
    listed = vm_env.runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
    assert [c for c in listed.containers if c.pod_sandbox_id == sandbox_id] == []

    # CRI: the four teardowns are idempotent, whatever the shape of an ID naming nothing.
    runtime = vm_env.runtime
    before = sorted(vm_env.state_dir(sandbox_id).rglob("*"))
    for gone in ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", "../" + sandbox_id, "a" * 65, "\u00e9"):
        runtime.StopContainer(pb.StopContainerRequest(container_id=gone, timeout=1), timeout=30)
        runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=gone), timeout=30)
        runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=gone), timeout=30)
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=gone), timeout=30)
    assert vm_env.pod_state(sandbox_id) == pb.SANDBOX_READY
    assert sorted(vm_env.state_dir(sandbox_id).rglob("*")) == before
    assert domain_exists(sandbox_id)
    runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
