"""Image volumes (CRI ``Mount.image``): validation, resolution and the paths both backends use.

Runtime-level checks go through the real services over a fake backend; the
sub-path rules run against a directory tree standing in for a mounted image;
the VM path runs with a fake mounter and a layout in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.runtime import Runtime, wire
from vmcri.api import api_pb2 as pb
from vmcri.errors import FailedPrecondition, InvalidArgument, NotFound
from vmcri.handlers.runc.rootfs import mount_image_view
from vmcri.handlers.vm.image_volumes import mount_image_volumes
from vmcri.handlers.vm.layout import GUEST_SHARE, SandboxLayout
from vmcri.handlers.vm.spec import container_spec
from vmcri.host.imagevolumes import (
    check_sub_path,
    first_mount_per_image,
    readonly_overlay_options,
    resolve_sub_path,
)
from vmcri.host.mounts import MS_BIND, MS_RDONLY, MS_REMOUNT
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, ImageInfo, Metadata, Mount, PodConfig
from vmcri.runtime.container_checks import validate_container
from vmcri.store.records import ContainerRecord, ImageVolume, SandboxRecord

CTX: Any = None
APP = ImageInfo("sha256:" + "a" * 64, "example.test/app:1", (), {})
DATA = ImageInfo("sha256:" + "d" * 64, "example.test/data:1", ("/l/0", "/l/1"), {})


class Images:
    """Only the app and data images are pulled."""

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        found = {"app:1": APP, "data:1": DATA}.get(ref)
        if found is None:
            raise NotFound(f"image {ref!r} is not pulled")
        return found


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return wire(tmp_path, APP, images=Images())


def _pod(rt: Runtime) -> str:
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    request = pb.RunPodSandboxRequest(config=config)
    return str(rt.servicer.RunPodSandbox(request, CTX).pod_sandbox_id)


def _config(*mounts: Mount) -> ContainerConfig:
    return ContainerConfig(
        metadata=Metadata(name="c"), image="app:1", command=("true",), mounts=mounts
    )


# ---------------------------------------------------------------- runtime layer


def test_create_records_the_volume_images(rt: Runtime) -> None:
    cid = rt.containers.create(
        _pod(rt),
        _config(Mount("/etc/x", host_path="/tmp"), Mount("/vol", readonly=True, image="data:1")),
    )
    record = rt.services.store.containers.get(cid)
    assert record.image_volumes == (ImageVolume(1, DATA.id, DATA.layer_dirs),)


def test_unpulled_volume_image_is_not_found_and_leaves_no_record(rt: Runtime) -> None:
    with pytest.raises(NotFound, match=r"config\.mounts\[0\]\.image: image 'gone:1'"):
        rt.containers.create(_pod(rt), _config(Mount("/vol", readonly=True, image="gone:1")))
    assert rt.services.store.containers.list() == []


@pytest.mark.parametrize("sub_path", ["/etc", "..", "a/../../b", "a/.."])
def test_escaping_sub_paths_are_invalid(sub_path: str) -> None:
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[1\]\.image_sub_path"):
        validate_container(
            _config(
                Mount("/a", host_path="/tmp"),
                Mount("/b", readonly=True, image="data:1", image_sub_path=sub_path),
            )
        )


def test_sub_path_without_image_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.image_sub_path: needs image"):
        validate_container(_config(Mount("/a", host_path="/tmp", image_sub_path="x")))


@pytest.mark.parametrize(
    ("plain", "escaping"),
    [
        ("", "/"),
        ("data", "/data"),
        ("data/sub/", "data/../.."),
        ("./data", "../data"),
        ("a..b", "a/../b"),
    ],
)
def test_plain_sub_paths_pass(plain: str, escaping: str) -> None:
    check_sub_path(plain, 0)
    # Where the line is: one step from each plain path is refused.
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.image_sub_path"):
        check_sub_path(escaping, 0)


# ---------------------------------------------------------------- the mounted view


@pytest.fixture
def view(tmp_path: Path) -> Path:
    """A tree standing in for a mounted image, with symlinks that aim outside it."""
    root = tmp_path / "view"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "sub" / "f").write_text("x")
    (root / "data" / "abs").symlink_to("/data/sub")
    (root / "data" / "climb").symlink_to("../../../../..")
    (root / "data" / "host").symlink_to(str(tmp_path))  # a host path, read as an image path
    (root / "data" / "dangling").symlink_to("nowhere")
    return root


@pytest.mark.parametrize(
    ("sub_path", "resolved"),
    [
        ("data/sub", "data/sub"),
        ("data/abs", "data/sub"),
        ("data/abs/f", "data/sub/f"),
        ("data/climb", ""),
        ("./data//sub/", "data/sub"),
    ],
)
def test_sub_path_symlinks_resolve_inside_the_image(
    view: Path, sub_path: str, resolved: str
) -> None:
    mount = resolve_sub_path(
        str(view), Mount("/v", readonly=True, image="data:1", image_sub_path=sub_path), 3
    )
    assert mount.image_sub_path == resolved


@pytest.mark.parametrize("sub_path", ["data/nope", "data/dangling", "data/host"])
def test_sub_path_missing_in_the_image_is_invalid(view: Path, sub_path: str) -> None:
    mount = Mount("/v", readonly=True, image="data:1", image_sub_path=sub_path)
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[3\]\.image_sub_path .* does not"):
        resolve_sub_path(str(view), mount, 3)


def test_lower_only_overlay_lists_the_topmost_layer_first() -> None:
    assert readonly_overlay_options(["/l/0", "/l/1", "/l/2"]) == "lowerdir=/l/2:/l/1:/l/0"
    with pytest.raises(FailedPrecondition):
        readonly_overlay_options(["/l/0"])
    with pytest.raises(FailedPrecondition):
        readonly_overlay_options(["/l/0", "/l/a,upperdir=/x"])


def test_one_view_per_distinct_image() -> None:
    mounts = [
        Mount("/a", host_path="/tmp"),
        Mount("/b", readonly=True, image="x"),
        Mount("/c", readonly=True, image="y"),
        Mount("/d", readonly=True, image="x", image_sub_path="s"),
    ]
    assert first_mount_per_image(mounts) == {"x": 1, "y": 2}


class RecordingHost:
    def __init__(self) -> None:
        self.mounts: list[tuple[str, str, str, int, str]] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self.mounts.append((source, target, fstype, flags, data))


def test_runc_view_is_an_overlay_or_a_read_only_bind(tmp_path: Path) -> None:
    host: Any = RecordingHost()
    mount_image_view(host, ["/l/0", "/l/1"], tmp_path / "two")
    mount_image_view(host, ["/l/0"], tmp_path / "one")
    overlay, bind, remount = host.mounts
    assert overlay == ("overlay", str(tmp_path / "two"), "overlay", 0, "lowerdir=/l/1:/l/0")
    assert bind[0] == "/l/0" and bind[3] & MS_BIND
    assert remount[3] & (MS_REMOUNT | MS_RDONLY) == MS_REMOUNT | MS_RDONLY


# ---------------------------------------------------------------- VM pods


class CopyMounter:
    """Stands in for the read-only view with a copy of the topmost layer."""

    def __init__(self) -> None:
        self.views: list[Path] = []

    def readonly_view(self, lowerdirs: Sequence[str], target: Path) -> None:
        shutil.copytree(lowerdirs[-1], target, symlinks=True)
        self.views.append(target)


def test_vm_spec_uses_guest_paths_of_views_and_volumes(tmp_path: Path, view: Path) -> None:
    layout = SandboxLayout(tmp_path / "pod", tmp_path / "disk")
    config = _config(
        Mount("/host", host_path="/srv/data", readonly=True),
        Mount("/vol", readonly=True, image="data:1"),
        Mount("/sub", readonly=True, image="data:1", image_sub_path="data/abs"),
    )
    cid = new_id()
    container = ContainerRecord(
        id=cid,
        sandbox_id="s",
        config=config,
        image_id=APP.id,
        image_name=APP.name,
        image_volumes=(ImageVolume(1, DATA.id, (str(tmp_path), str(view))),),
    )
    mounter: Any = CopyMounter()
    resolved, views = mount_image_volumes(mounter, layout, container)
    guest_view = f"{GUEST_SHARE}/containers/{cid}/image-volumes/1"
    assert mounter.views == [layout.image_volume(cid, 1)]  # one view for both mounts
    assert views == {"data:1": guest_view}
    sandbox = SandboxRecord(
        id="s", handler="vm", backend="vm", config=PodConfig(metadata=Metadata(name="p"))
    )
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    spec = container_spec(
        sandbox,
        resolved,
        APP,
        str(rootfs),
        "/guest/rootfs",
        {0: dataclasses.replace(config.mounts[0], host_path="/guest/volumes/0")},
        views,
    )
    sources = {m["destination"]: (m["source"], m["options"]) for m in spec["mounts"]}  # type: ignore[attr-defined]
    assert sources["/host"][0] == "/guest/volumes/0"
    assert sources["/vol"][0] == guest_view
    assert sources["/sub"][0] == f"{guest_view}/data/sub"
    assert "ro" in sources["/vol"][1] and "ro" in sources["/sub"][1]


def test_vm_missing_sub_path_is_invalid(tmp_path: Path, view: Path) -> None:
    container = ContainerRecord(
        id=new_id(),
        sandbox_id="s",
        config=_config(Mount("/sub", readonly=True, image="data:1", image_sub_path="data/nope")),
        image_id=APP.id,
        image_name=APP.name,
        image_volumes=(ImageVolume(0, DATA.id, (str(view),)),),
    )
    mounter: Any = CopyMounter()
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.image_sub_path"):
        mount_image_volumes(mounter, SandboxLayout(tmp_path / "pod", tmp_path / "disk"), container)


def test_vm_volume_without_resolved_image_is_refused(tmp_path: Path) -> None:
    container = ContainerRecord(
        id=new_id(),
        sandbox_id="s",
        config=_config(Mount("/vol", readonly=True, image="data:1")),
        image_id=APP.id,
        image_name=APP.name,
    )
    mounter: Any = CopyMounter()
    with pytest.raises(FailedPrecondition, match=r"config\.mounts\[0\]\.image"):
        mount_image_volumes(mounter, SandboxLayout(tmp_path / "pod", tmp_path / "disk"), container)
    assert mounter.views == []
