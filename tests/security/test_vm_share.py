"""A hostile guest against the host side of its pod share (the class of CVE-2020-2026).

No VM boots here: the attacker is this test, writing into the pod's share
directory as QEMU or virtiofsd would on the guest's behalf (as root), in the
file server's mount namespace (a process of the test's own that stands for
QEMU, in a slave copy of the host's namespace, as libvirt makes one). The real
backend does the real mounts (overlayfs, binds, the read-only slave share, the
pod's mount namespace); only libvirt and the agent are fakes.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.cgroups import FakePodCgroups
from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import vm_context
from tests.support.wait import wait_for
from vmcri.agent import types as agent_types
from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.backend import VmBackend
from vmcri.handlers.vm.domain import domain_name
from vmcri.handlers.vm.hypervisor import BeforeRun
from vmcri.handlers.vm.options import VmOptions
from vmcri.host import mount_ns
from vmcri.host.mounts import HostMounter, mount_points
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, ContainerSecurity, ImageInfo, Metadata, Mount, PodConfig
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.store.store import Store
from vmcri.supervisor.link import AgentLink

pytestmark = pytest.mark.integration

GUEST_VERSION = "abc123def4567890"


class FakeClient:
    def __init__(self) -> None:
        self.created: list[str] = []

    def setup_sandbox(self, **_: Any) -> agent_types.SandboxFiles:
        return agent_types.SandboxFiles("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")

    def create_container(self, container_id: str, spec: bytes, **_: Any) -> None:
        self.created.append(container_id)

    def mount_shares(self, mounts: Any) -> None:
        pass  # the guest's 9p mount: the attacker here writes into the share directly

    def remove_container(self, container_id: str) -> None:
        pass


class FakeLink:
    def __init__(self) -> None:
        self.client = FakeClient()

    def wait_ready(self, timeout_s: float, alive: Any) -> agent_types.AgentInfo:
        return agent_types.AgentInfo(f"1+{GUEST_VERSION[:12]}", 1, 0, 0, 0)

    def open_log(self, container_id: str) -> None:
        pass

    def close_log(self, container_id: str) -> None:
        pass

    def close(self) -> None:
        pass


class FileServerHypervisor(FakeHypervisor):
    """libvirt without VMs, but each "VM" has the mount namespace libvirt gives QEMU:
    a process in a copy of the host's, a slave of it, where the guest's file server works."""

    everyone: list[subprocess.Popen[bytes]] = []  # killed after each test

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, xml: str, before_run: BeforeRun | None = None) -> None:
        super().start(name, xml, before_run)
        server = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sleep", "600"])
        self.servers[name] = server
        self.everyone.append(server)
        host = os.readlink("/proc/self/ns/mnt")
        wait_for(lambda: self.mount_namespace(name) not in ("", host), 10, "the unshare")

    def mount_namespace(self, name: str) -> str:
        try:
            return os.readlink(f"/proc/{self.servers[name].pid}/ns/mnt")
        except (KeyError, OSError):
            return ""

    def destroy(self, name: str) -> None:
        super().destroy(name)
        server = self.servers.pop(name, None)
        if server is not None:
            server.kill()
            server.wait()

    def root(self, name: str) -> Path:
        """The file server's view of the host's files."""
        return Path(f"/proc/{self.servers[name].pid}/root")


class Pod:
    def __init__(self, tmp: Path, writable_layer_mib: int = 0) -> None:
        guest = tmp / "guest"
        guest.mkdir()
        for name in ("vmlinuz", "initrd.img", "rootfs.img"):
            (guest / name).write_bytes(b"x")
        (guest / "VERSION").write_text(GUEST_VERSION + "\n")
        self.store = Store(tmp / "root")
        self.root = tmp / "root" / "backends" / "vm"
        self.state = tmp / "state" / "backends" / "vm"
        context = vm_context(tmp, self.store)
        options = VmOptions(
            guest_dir=str(guest),
            accel="tcg",
            shared_fs="9p",
            boot_timeout_s=1,
            writable_layer_mib=writable_layer_mib,
            template="off",  # the fake hypervisor boots nothing to save
        )
        self.hypervisor = FileServerHypervisor()
        self.backend = VmBackend(
            options, context, hypervisor=self.hypervisor, cgroups=FakePodCgroups()
        )
        self.link = FakeLink()
        # FakeLink has what run_sandbox and create_container call of an AgentLink.
        self.backend._containers.link = lambda sandbox: cast(AgentLink, self.link)  # type: ignore[method-assign]
        config = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"))
        self.sandbox = self.store.sandboxes.add(
            SandboxRecord(id=new_id(), handler="vm", backend="vm", config=config)
        )
        self.backend.run_sandbox(self.sandbox)
        self.host_share = self.state / self.sandbox.id / "share"
        # What the guest reaches: the share in the file server's namespace.
        server = self.hypervisor.root(domain_name(self.sandbox.id))
        self.share = server / self.host_share.relative_to("/")

    def container(self, mounts: tuple[Mount, ...] = (), user: str = "") -> ContainerRecord:
        config = ContainerConfig(
            metadata=Metadata(name="c"),
            image="busybox",
            command=("/bin/true",),
            mounts=mounts,
            security=ContainerSecurity(run_as_username=user),
        )
        return ContainerRecord(
            id=new_id(), sandbox_id=self.sandbox.id, config=config, image_id="sha256:1",
            image_name="busybox",
        )  # fmt: skip


def image(lower: Path) -> ImageInfo:
    return ImageInfo(id="sha256:1", name="busybox", layer_dirs=(str(lower),), config={})


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vmcri-sec-", dir="/tmp"))  # short: socket paths
    yield path
    for server in FileServerHypervisor.everyone:
        server.kill()
        server.wait()
    FileServerHypervisor.everyone.clear()
    HostMounter().unmount_below(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lower(tmp: Path) -> Path:
    layer = tmp / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return layer


def test_the_guest_cannot_plant_a_symlink_where_the_host_mounts(tmp: Path, lower: Path) -> None:
    pod = Pod(tmp)
    victim = tmp / "victim"  # stands for /etc/cron.d: a host directory the guest wants
    victim.mkdir()
    volume = tmp / "volume"
    volume.mkdir()
    (volume / "data").write_text("the pod's volume")
    container = pod.container(mounts=(Mount(container_path="/data", host_path=str(volume)),))

    # The guest watches containers/ and plants a symlink where the host will mount.
    planted = pod.share / "containers" / container.id
    with pytest.raises(OSError) as refused:
        os.makedirs(pod.share / "containers", exist_ok=True)
        os.symlink(victim, planted)
    assert refused.value.errno == errno.EROFS

    pod.backend.create_container(pod.sandbox, container, image(lower))

    assert mount_points(victim) == []
    assert list(victim.iterdir()) == []
    # The guest sees the container's volume through the share (its rootfs comes as disks,
    # and the host's view of the layers for the user lookup is gone, and was never shared) ...
    assert (planted / "volumes" / "0" / "data").read_text() == "the pod's volume"
    assert sorted(p.name for p in planted.iterdir()) == ["volumes"]
    assert mount_points(pod.state / pod.sandbox.id / "views") == []
    # ... can write inside it ...
    (planted / "volumes" / "0" / "new-file").write_text("guest data")
    # ... but cannot swap the directories that hold the mount points.
    attempts: list[Callable[[], None]] = [
        lambda: os.rename(planted / "volumes", planted / "moved"),
        lambda: os.symlink(victim, planted / "volumes" / "1"),
        lambda: (planted / "rootfs-2").mkdir(),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as again:
            attempt()
        assert again.value.errno == errno.EROFS


def test_host_mounts_of_a_vm_pod_are_nosuid_nodev(tmp: Path, lower: Path) -> None:
    pod = Pod(tmp)
    volume = tmp / "volume"
    volume.mkdir()
    container = pod.container(mounts=(Mount(container_path="/data", host_path=str(volume)),))
    pod.backend.create_container(pod.sandbox, container, image(lower))
    base = pod.state / pod.sandbox.id
    here = _mount_options(base)
    there = mount_ns.run_in(base / "mountns", lambda: _mount_options(base))
    assert here and any("/volumes/" in t for t in there), "no mounts found below the pod"
    for target, opts in [*here.items(), *there.items()]:
        assert "nosuid" in opts and "nodev" in opts, (target, opts)
    assert os.stat(base).st_mode & 0o077 == 0
    assert os.stat(pod.root / pod.sandbox.id).st_mode & 0o077 == 0


def test_a_fifo_for_etc_passwd_does_not_hang_container_creation(tmp: Path, lower: Path) -> None:
    pod = Pod(tmp)
    (lower / "etc" / "passwd").unlink()
    os.mkfifo(lower / "etc" / "passwd")
    container = pod.container(user="app")
    outcome: list[BaseException | None] = []

    def create() -> None:
        try:
            pod.backend.create_container(pod.sandbox, container, image(lower))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=create, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # free the thread: open the FIFO for writing once
        fd = os.open(pod.share / "containers" / container.id / "rootfs/etc/passwd", os.O_WRONLY)
        os.close(fd)
        pytest.fail("CreateContainer blocked on a FIFO in the image")
    assert isinstance(outcome[0], InvalidArgument)
    assert "'app' is not in the image's /etc/passwd" in str(outcome[0])


def test_etc_passwd_symlinked_to_a_host_file_is_read_inside_the_rootfs(
    tmp: Path, lower: Path
) -> None:
    pod = Pod(tmp)
    host_secret = tmp / "host-passwd"
    host_secret.write_text("evil:x:4242:4242::/:/bin/sh\n")
    (lower / "etc" / "passwd").unlink()
    # Relative and absolute escapes: both must resolve inside the rootfs.
    (lower / "etc" / "passwd").symlink_to(f"../../../../../../..{host_secret}")
    container = pod.container(user="evil")
    with pytest.raises(InvalidArgument, match="'evil' is not in the image's /etc/passwd"):
        pod.backend.create_container(pod.sandbox, container, image(lower))
    # The failed creation left no mount of it.
    assert mount_points(pod.state / pod.sandbox.id / "mounts" / "containers") == []


def test_the_writable_disk_is_made_by_the_host_and_never_mounted_there(
    tmp: Path, lower: Path
) -> None:
    # The pod's writable layer is a disk only the guest mounts (the guest decides its bytes):
    # the host makes it (empty ext4, the configured size) before the guest exists, attaches
    # it read-write and each layer read-only (a hard link in the pod's own dir: the one
    # path of it the pod's jailed QEMU can open), and mounts none of them.
    pod = Pod(tmp, writable_layer_mib=64)
    container = pod.container()
    pod.backend.create_container(pod.sandbox, container, image(lower))
    writable = pod.root / pod.sandbox.id / "writable.img"
    assert writable.stat().st_size == 64 << 20
    assert writable.read_bytes()[1080:1082] == b"\x53\xef"  # ext4's magic
    assert mount_points(pod.root / pod.sandbox.id) == []
    disks = pod.hypervisor.disks(domain_name(pod.sandbox.id))
    link = pod.root / pod.sandbox.id / "layers" / tmp.name / "layer.erofs"
    assert disks == {str(writable): 0, str(link): 1}
    assert link.stat().st_ino == (tmp / "layer.erofs").stat().st_ino
    [layer_xml] = [x for x in pod.hypervisor.attached[domain_name(pod.sandbox.id)] if "erofs" in x]
    assert "<readonly/>" in layer_xml
    pod.backend.remove_container(pod.sandbox, container)
    pod.backend.remove_sandbox(pod.sandbox)
    assert not (pod.root / pod.sandbox.id).exists()
    assert not (pod.state / pod.sandbox.id).exists()
    assert (
        mount_points(tmp / "root") == []
        and mount_points(tmp / "state" / "backends" / "vm" / pod.sandbox.id) == []
    )


def _mount_options(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    prefix = str(root)
    with open("/proc/thread-self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == prefix or fields[4].startswith(prefix + "/"):
                found[fields[4]] = set(fields[5].split(","))
    return found
