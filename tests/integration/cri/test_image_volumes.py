"""Image volumes (CRI ``Mount.image``) through the daemon with the runc handler.

A data image is mounted read-only into a busybox container, whole and by
sub-path (including through a symlink that must stay inside the image); the
image is in use while the container exists; nothing stays mounted afterwards.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.cri.conftest import CriEnv
from tests.support.layers import Layer
from tests.support.push import push_image
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import mount_points

pytestmark = pytest.mark.integration


def _data_layers() -> list[Layer]:
    lower = Layer().dir("data").file("data/hello.txt", b"hello from the image\n")
    lower.dir("data/sub").file("data/sub/inner.txt", b"inner\n")
    # Absolute and climbing symlinks: resolved inside the image, never on the host.
    lower.symlink("data/abs", "/data/sub").symlink("data/climb", "../../../../data")
    upper = Layer().dir("data").file("data/top.txt", b"top layer\n")
    return [lower, upper]


@pytest.fixture(scope="module")
def images(env: CriEnv) -> Iterator[dict[str, str]]:
    host = env.image.split("/")[0]
    refs = {"data": f"{host}/test/data:1", "one": f"{host}/test/one:1"}
    push_image(host, "test/data:1", _data_layers())
    push_image(host, "test/one:1", [Layer().file("one.txt", b"single layer\n")])
    for ref in refs.values():
        env.daemon.images().PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120
        )
    yield refs


def _create(env: CriEnv, sandbox_id: str, name: str, mounts: list[pb.Mount]) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=env.image),
        command=["sleep", "3600"],
        mounts=mounts,
    )
    request = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config)
    return str(env.runtime.CreateContainer(request, timeout=60).container_id)


def _exec(env: CriEnv, container_id: str, *cmd: str) -> pb.ExecSyncResponse:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=20)
    response: pb.ExecSyncResponse = env.runtime.ExecSync(request, timeout=40)
    return response


def _views(env: CriEnv) -> list[Path]:
    return [p for p in mount_points(env.tmp / "state") if "image-volumes" in p.parts]


def _image_mount(ref: str, path: str, sub_path: str = "") -> pb.Mount:
    return pb.Mount(
        container_path=path, image=pb.ImageSpec(image=ref), image_sub_path=sub_path, readonly=True
    )


def test_image_volume_is_readable_read_only_and_in_use(env: CriEnv, images: dict[str, str]) -> None:
    sandbox_id = env.run_pod("imgvol")
    mounts = [
        _image_mount(images["data"], "/vol"),
        _image_mount(images["data"], "/sub", "data/sub"),
        _image_mount(images["data"], "/abs", "data/abs"),
        _image_mount(images["data"], "/climb", "data/climb"),
        _image_mount(images["one"], "/one"),
    ]
    cid = _create(env, sandbox_id, "reader", mounts)
    env.start(cid)
    views = _views(env)
    assert len(views) == 2  # one view per distinct image
    for view in views:  # read-only on the host too: the shared layers stay intact
        with pytest.raises(OSError) as host_err:
            (view / "written-by-host").touch()
        assert host_err.value.errno == errno.EROFS
    for path, want in (
        ("/vol/data/hello.txt", b"hello from the image\n"),
        ("/vol/data/top.txt", b"top layer\n"),
        ("/sub/inner.txt", b"inner\n"),
        ("/abs/inner.txt", b"inner\n"),
        ("/climb/hello.txt", b"hello from the image\n"),
        ("/one/one.txt", b"single layer\n"),
    ):
        result = _exec(env, cid, "cat", path)
        assert (result.exit_code, result.stdout) == (0, want), result.stderr
    for path in ("/vol/new", "/sub/new", "/one/new"):
        result = _exec(env, cid, "touch", path)
        assert result.exit_code != 0
        assert b"Read-only file system" in result.stderr

    with pytest.raises(grpc.RpcError) as err:
        env.daemon.images().RemoveImage(
            pb.RemoveImageRequest(image=pb.ImageSpec(image=images["data"])), timeout=30
        )
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    assert _views(env) == []
    env.daemon.images().RemoveImage(
        pb.RemoveImageRequest(image=pb.ImageSpec(image=images["one"])), timeout=30
    )


@pytest.mark.parametrize(
    ("mount", "code", "field"),
    [
        ("missing-sub", grpc.StatusCode.INVALID_ARGUMENT, "config.mounts[0].image_sub_path"),
        ("dotdot-sub", grpc.StatusCode.INVALID_ARGUMENT, "config.mounts[0].image_sub_path"),
        ("not-pulled", grpc.StatusCode.NOT_FOUND, "config.mounts[0].image"),
    ],
)
def test_bad_image_volume_is_refused_and_leaves_nothing(
    env: CriEnv, images: dict[str, str], mount: str, code: grpc.StatusCode, field: str
) -> None:
    host = env.image.split("/")[0]
    bad = {
        "missing-sub": _image_mount(images["data"], "/vol", "data/nope"),
        "dotdot-sub": _image_mount(images["data"], "/vol", "data/../../etc"),
        "not-pulled": _image_mount(f"{host}/test/never-pulled:1", "/vol"),
    }[mount]
    sandbox_id = env.run_pod(f"imgvol-bad-{mount}")
    before = {p.name for p in (env.tmp / "state").rglob("containers/*")}
    with pytest.raises(grpc.RpcError) as err:
        _create(env, sandbox_id, "bad", [bad])
    assert err.value.code() is code
    assert field in str(err.value.details())
    assert _views(env) == []
    assert {p.name for p in (env.tmp / "state").rglob("containers/*")} == before
