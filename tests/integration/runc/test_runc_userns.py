"""Pods with their own user namespace (``hostUsers: false``) on real runc and ID-mapped mounts."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.runc.runc_itest_helpers import RECORDS, container_record, new_id
from vmcri.errors import FailedPrecondition, InvalidArgument
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.handlers.runc.rootfs import mount_image_view, unmount_image_views
from vmcri.model import (
    ContainerSecurity,
    IDMapping,
    ImageInfo,
    Metadata,
    Mount,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
)
from vmcri.store.records import ContainerRecord, SandboxRecord

pytestmark = pytest.mark.integration

SIZE = 65536


@pytest.fixture
def base() -> int:
    """A host ID range of its own for each test, as kubelet hands out."""
    return (16 + random.randrange(1000)) * SIZE


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    # pytest's own temporary root is mode 0700; the pod's root must be able to pass.
    path = Path(tempfile.mkdtemp(prefix="vmcri-userns-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def userns(base: int, **kw: object) -> NamespaceOptions:
    mapping = (IDMapping(host_id=base, container_id=0, length=SIZE),)
    return NamespaceOptions(
        userns_mode=NamespaceMode.POD,
        uid_mappings=mapping,
        gid_mappings=mapping,
        **kw,  # type: ignore[arg-type]
    )


def pod(ns: NamespaceOptions) -> SandboxRecord:
    config = PodConfig(
        metadata=Metadata(name="userns", uid=new_id(), namespace="ns"),
        hostname="usernspod",
        security=PodSecurity(namespace_options=ns),
    )
    return SandboxRecord(id=new_id(), handler="runc", backend="runc", config=config)


def stdout_lines(c: ContainerRecord) -> list[str]:
    return [
        line.split(" ", 3)[3]
        for line in Path(c.log_path).read_text().splitlines()
        if " stdout " in line
    ]


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_container_is_root_only_inside_its_pod(
    backend: RuncBackend, image: ImageInfo, workdir: Path, base: int
) -> None:
    volume = workdir / "volume"
    volume.mkdir()
    (volume / "from-host").write_text("hi\n")
    log_file = workdir / "termination-log"  # kubelet mounts single files too
    log_file.write_text("")
    ns = userns(base)
    sb = pod(ns)
    backend.run_sandbox(sb)
    script = (
        "cat /proc/self/uid_map; id -u; stat -c %u /bin/busybox /etc/hosts /;"
        " echo new > /made-inside && stat -c %u /made-inside;"
        " stat -c %u /data/from-host; echo w > /data/from-pod && echo wrote;"
        " echo bye > /dev/termination-log; hostname;"
        " sleep 1000"
    )
    c = container_record(
        sb, workdir, command=("sh", "-c", script),
        mounts=(
            Mount(container_path="/data", host_path=str(volume)),
            Mount(container_path="/dev/termination-log", host_path=str(log_file)),
        ),
        security=ContainerSecurity(namespace_options=ns),
    )  # fmt: skip
    backend.create_container(sb, c, image)
    pid = backend.supervisor.start(sb, c)
    # The same process is an ordinary user on the host.
    assert _host_uid(pid) == base
    for _ in range(200):
        if len(stdout_lines(c)) >= 9:
            break
        time.sleep(0.05)
    lines = stdout_lines(c)
    assert lines[0].split() == ["0", str(base), str(SIZE)]
    assert lines[1:] == ["0", "0", "0", "0", "0", "0", "wrote", "usernspod"]
    # Files the pod's root writes are the pod's on the host: its rootfs...
    upper = backend.layout.layer_dir(c.id) / "upper"
    assert (upper / "made-inside").stat().st_uid == base
    # ...while the volume is seen through the mapping both ways.
    assert (volume / "from-pod").stat().st_uid == 0
    assert log_file.read_text() == "bye\n"
    # exec joins the same namespace.
    res = backend.supervisor.exec_sync(sb, c, ["cat", "/proc/self/uid_map"], 10)
    assert res.stdout.split() == [b"0", str(base).encode(), str(SIZE).encode()]

    backend.remove_container(sb, c)
    backend.stop_sandbox(sb)
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []
    assert (volume / "from-host").read_text() == "hi\n"  # a volume outlives its container


def test_shared_pid_namespace_in_a_user_namespace(
    backend: RuncBackend, image: ImageInfo, workdir: Path, base: int
) -> None:
    ns = userns(base, pid=NamespaceMode.POD)
    sb = pod(ns)
    backend.run_sandbox(sb)
    c1 = container_record(sb, workdir, name="a", command=("sleep", "1000"),
                          security=ContainerSecurity(namespace_options=ns))  # fmt: skip
    # A client that sets the user namespace on the pod only gets the pod's.
    pid_only = ContainerSecurity(namespace_options=NamespaceOptions(pid=NamespaceMode.POD))
    c2 = container_record(sb, workdir, name="b", command=("sleep", "1000"), security=pid_only)
    for c in (c1, c2):
        backend.create_container(sb, c, image)
        backend.supervisor.start(sb, c)
    res = backend.supervisor.exec_sync(
        sb, c2, ["sh", "-c", "stat -c %u /proc/1; ps -o user,args"], 10
    )
    out = res.stdout.decode()
    assert out.splitlines()[0] == "0"  # pause runs as the pod's root
    assert out.count("sleep 1000") == 2, out
    assert _host_uid(backend.pods.pause_pid(sb.id)) == base
    backend.stop_sandbox(sb)
    for c in (c1, c2):
        backend.remove_container(sb, c)
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []


def test_image_volume_is_id_mapped(
    backend: RuncBackend, busybox_layer: Path, workdir: Path, base: int
) -> None:
    sb = pod(userns(base))
    backend.run_sandbox(sb)
    userns_file = backend.pods.ns_path(sb.id, "user", sb.config)
    views = workdir / "views"
    host = RealHost()
    extra = workdir / "extra-layer"
    extra.mkdir()
    (extra / "added").write_text("x")
    mount_image_view(host, [str(busybox_layer), str(extra)], views / "0", userns_file)
    mount_image_view(host, [str(busybox_layer)], views / "1", userns_file)
    for view in ("0", "1"):
        assert (views / view / "bin" / "busybox").stat().st_uid == base
    assert (views / "0" / "added").stat().st_uid == base
    unmount_image_views(host, views)
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []


@pytest.mark.parametrize(
    ("ns", "field"),
    [
        (lambda b: userns(b, network=NamespaceMode.NODE), "namespace_options.network"),
        (lambda b: userns(b, ipc=NamespaceMode.NODE), "namespace_options.ipc"),
        (
            lambda b: NamespaceOptions(
                userns_mode=NamespaceMode.POD,
                uid_mappings=(IDMapping(0, 0, SIZE),),
                gid_mappings=(IDMapping(b, 0, SIZE),),
            ),
            "userns_options.uids[0].host_id",
        ),
        (
            lambda b: NamespaceOptions(
                userns_mode=NamespaceMode.POD,
                uid_mappings=(IDMapping(b, 0, SIZE), IDMapping(b + 10, SIZE, 5)),
                gid_mappings=(IDMapping(b, 0, SIZE),),
            ),
            "userns_options.uids: host_id ranges overlap",
        ),
        (
            lambda b: NamespaceOptions(
                userns_mode=NamespaceMode.POD, uid_mappings=(IDMapping(b, 0, SIZE),)
            ),
            "userns_options.gids: mode POD needs at least one mapping",
        ),
        (
            lambda b: NamespaceOptions(userns_mode=NamespaceMode.CONTAINER),
            "userns_options.mode",
        ),
    ],
)
def test_bad_user_namespace_options_leave_nothing(
    backend: RuncBackend,
    workdir: Path,
    base: int,
    ns: Callable[[int], NamespaceOptions],
    field: str,
) -> None:
    sb = pod(ns(base))
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        backend.run_sandbox(sb)
    assert not backend.layout.sandbox_dir(sb.id).exists()
    assert _mounts_under(workdir) == []


def test_container_cannot_pick_other_mappings(
    backend: RuncBackend, image: ImageInfo, workdir: Path, base: int
) -> None:
    sb = pod(userns(base))
    backend.run_sandbox(sb)
    other = ContainerSecurity(namespace_options=userns(base + SIZE))
    c = container_record(sb, workdir, command=("true",), security=other)
    with pytest.raises(InvalidArgument, match="userns_options: must be the same"):
        backend.create_container(sb, c, image)
    assert not backend.layout.container_dir(c.id).exists()
    backend.remove_sandbox(sb)
    assert _mounts_under(workdir) == []


def test_unsearchable_state_dir_is_refused(
    make_backend: Callable[[], RuncBackend], workdir: Path, base: int
) -> None:
    locked = workdir / "locked"
    locked.mkdir(mode=0o700)
    layout = Layout(locked / "state", locked / "root")
    be = RuncBackend(RuncOptions(), layout, RealHost(), RECORDS)
    sb = pod(userns(base))
    assert not be.features().user_namespaces  # kubelet is told up front
    with pytest.raises(FailedPrecondition, match="o\\+x"):
        be.run_sandbox(sb)
    assert not be.layout.sandbox_dir(sb.id).exists()
    os.chmod(locked, 0o711)


def test_handler_reports_user_namespaces(backend: RuncBackend) -> None:
    assert backend.features().user_namespaces
