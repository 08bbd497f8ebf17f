"""kubelet's mounts on both handlers: a non-recursive read-only mount, HostToContainer
propagation of a mount the host makes later, and (VM pods) Bidirectional refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.conformance.conftest import Pod
from tests.support.wait import wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

SLEEP = ["sleep", "3600"]


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that is a shared mount point, as kubelet makes its pods' directories."""
    path = tmp_path / "volume"
    path.mkdir()
    (path / "hello.txt").write_text("hello\n")
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-shared", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-R", "-l", str(path)], check=False)


def test_a_non_recursive_read_only_mount(pod: Pod, shared_dir: Path) -> None:
    # As the CRI validation suite does: a writable mount below the volume stays writable.
    sub = shared_dir / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    mount = pb.Mount(container_path="/data", host_path=str(shared_dir), readonly=True)
    container_id = pod.run("ro-mount", SLEEP, mounts=[mount])
    read = pod.exec(container_id, ["cat", "/data/hello.txt"])
    assert (read.exit_code, read.stdout) == (0, b"hello\n"), read.stderr
    write = pod.exec(container_id, ["touch", "/data/new"])
    assert write.exit_code != 0 and b"Read-only file system" in write.stderr, write
    assert not (shared_dir / "new").exists()
    below = pod.exec(container_id, ["sh", "-c", "echo in-sub > /data/sub/file"])
    assert below.exit_code == 0, below.stderr
    assert (sub / "file").read_text() == "in-sub\n"
    pod.remove(container_id)


def test_host_to_container_propagation_carries_a_later_host_mount(
    pod: Pod, shared_dir: Path
) -> None:
    mount = pb.Mount(
        container_path="/data",
        host_path=str(shared_dir),
        propagation=pb.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
    )
    container_id = pod.run("h2c-mount", SLEEP, mounts=[mount])
    late = shared_dir / "late"
    late.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(late)], check=True)
    (late / "after.txt").write_text("mounted after the start\n")

    def seen() -> bool:
        result = pod.exec(container_id, ["cat", "/data/late/after.txt"])
        return result.exit_code == 0 and result.stdout == b"mounted after the start\n"

    assert wait_until(seen, 30), pod.exec(container_id, ["ls", "-la", "/data", "/data/late"])
    pod.remove(container_id)


def test_bidirectional_propagation_is_refused_in_a_vm_pod(vm_pod: Pod, shared_dir: Path) -> None:
    mount = pb.Mount(
        container_path="/data",
        host_path=str(shared_dir),
        propagation=pb.MountPropagation.PROPAGATION_BIDIRECTIONAL,
    )
    security = pb.LinuxContainerSecurityContext(privileged=True)
    with pytest.raises(grpc.RpcError) as refused:
        vm_pod.create("bidi-mount", SLEEP, security=security, mounts=[mount])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "mounts[0].propagation" in str(refused.value.details())


def test_a_read_only_volume_stays_read_only_whatever_the_guest_does(
    vm_pod: Pod, shared_dir: Path
) -> None:
    # The guest kernel is untrusted: root in a privileged container can remount its view of
    # the volume writable. The host's copy that virtiofsd serves is read-only all the same.
    mount = pb.Mount(container_path="/data", host_path=str(shared_dir), readonly=True)
    security = pb.LinuxContainerSecurityContext(privileged=True)
    container_id = vm_pod.run("ro-attacker", SLEEP, security=security, mounts=[mount])
    script = "mount -o remount,rw,bind /data && grep ' /data ' /proc/mounts && touch /data/x"
    attack = vm_pod.exec(container_id, ["sh", "-c", script])
    assert b" rw," in attack.stdout, attack  # the guest's own mount did become writable
    assert attack.exit_code != 0 and b"Read-only file system" in attack.stderr, attack
    assert not (shared_dir / "x").exists()
    vm_pod.remove(container_id)


def test_a_volume_submount_can_be_removed_on_the_node_while_the_pod_runs(
    pod: Pod, tmp_path: Path
) -> None:
    # A node removes a directory a pod's hostPath holds a mount on (unmount, then rmdir).
    # The host's own copies of a VM pod's volume mounts sat on that directory in the host's
    # namespace and made the rmdir fail with EBUSY; copies in other namespaces (a runc
    # container's, a VM pod's own, QEMU's) are detached by it.
    volume = tmp_path / "volume"
    sub = volume / "sub"
    sub.mkdir(parents=True)
    (volume / "hello.txt").write_text("hello\n")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        (sub / "in-sub.txt").write_text("in the submount\n")
        mount = pb.Mount(container_path="/data", host_path=str(volume))
        container_id = pod.run("submount-rmdir", SLEEP, mounts=[mount])
        seen = pod.exec(container_id, ["cat", "/data/sub/in-sub.txt"])
        assert (seen.exit_code, seen.stdout) == (0, b"in the submount\n"), seen.stderr
    finally:
        subprocess.run(["umount", str(sub)], check=True)

    sub.rmdir()  # EBUSY while a copy of the tmpfs sat on it in the host's namespace

    assert not sub.exists()
    # The pod's view of the volume keeps working; the removed directory is gone, cleanly
    # (a VM guest may hold it for its file share's entry timeout first).
    read = pod.exec(container_id, ["cat", "/data/hello.txt"])
    assert (read.exit_code, read.stdout) == (0, b"hello\n"), read.stderr

    def gone() -> bool:
        cat = pod.exec(container_id, ["cat", "/data/sub/in-sub.txt"])
        assert cat.exit_code != 0 or cat.stdout == b"in the submount\n", cat
        return cat.exit_code != 0 and b"No such file or directory" in cat.stderr

    assert wait_until(gone, 30), pod.exec(container_id, ["ls", "-la", "/data"])
    write = pod.exec(container_id, ["sh", "-c", "echo still > /data/after.txt"])
    assert write.exit_code == 0, write.stderr
    assert (volume / "after.txt").read_text() == "still\n"
    pod.remove(container_id)


def test_a_recursive_read_only_mount_is_read_only_below_too(pod: Pod, tmp_path: Path) -> None:
    # kubelet sends recursiveReadOnly: Enabled only to a handler that announces it.
    status = pod.runtime.Status(pb.StatusRequest(), timeout=30)
    announced = {h.name: h.features.recursive_read_only_mounts for h in status.runtime_handlers}
    assert announced[pod.handler], announced
    volume = tmp_path / "volume"
    sub = volume / "sub"
    sub.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        (sub / "in-sub.txt").write_text("in the submount\n")
        mount = pb.Mount(
            container_path="/data", host_path=str(volume), readonly=True, recursive_read_only=True
        )
        container_id = pod.run("rro-mount", SLEEP, mounts=[mount])
        read = pod.exec(container_id, ["cat", "/data/sub/in-sub.txt"])
        assert (read.exit_code, read.stdout) == (0, b"in the submount\n"), read.stderr
        for target in ("/data/sub/new", "/data/new"):
            write = pod.exec(container_id, ["touch", target])
            assert write.exit_code != 0 and b"Read-only file system" in write.stderr, write
        assert not (sub / "new").exists() and not (volume / "new").exists()
        pod.remove(container_id)
    finally:
        subprocess.run(["umount", str(sub)], check=True)


def test_a_recursive_read_only_volume_stays_so_below_whatever_the_guest_does(
    vm_pod: Pod, tmp_path: Path
) -> None:
    # Root in a privileged container remounts its view writable: the host's copy of the
    # submount that the file server serves was made read-only before it was attached.
    volume = tmp_path / "volume"
    sub = volume / "sub"
    sub.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        mount = pb.Mount(
            container_path="/data", host_path=str(volume), readonly=True, recursive_read_only=True
        )
        security = pb.LinuxContainerSecurityContext(privileged=True)
        container_id = vm_pod.run("rro-attacker", SLEEP, security=security, mounts=[mount])
        script = (
            "mount -o remount,rw,bind /data && grep ' /data ' /proc/mounts && touch /data/sub/x"
        )
        attack = vm_pod.exec(container_id, ["sh", "-c", script])
        assert b" rw," in attack.stdout, attack  # the guest's own mount did become writable
        assert attack.exit_code != 0 and b"Read-only file system" in attack.stderr, attack
        assert not (sub / "x").exists()
        vm_pod.remove(container_id)
    finally:
        subprocess.run(["umount", str(sub)], check=True)
