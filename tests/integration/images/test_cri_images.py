"""The CRI ImageService over real gRPC on a unix socket, and the images CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry
from vmcri.api import api_pb2, api_pb2_grpc
from vmcri.cli import main as cli_main
from vmcri.cri.images import ImageServicer
from vmcri.cri.status import ErrorMappingInterceptor
from vmcri.images.service import ImageService

pytestmark = pytest.mark.integration


@pytest.fixture()
def stub(tmp_path: Path, conf: Path) -> Iterator[api_pb2_grpc.ImageServiceStub]:
    service = ImageService(tmp_path / "root", conf, in_use=lambda: set())
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ErrorMappingInterceptor()])
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(service), server)
    sock = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        yield api_pb2_grpc.ImageServiceStub(channel)
    server.stop(None)


def test_pull_list_status_remove(
    stub: api_pb2_grpc.ImageServiceStub, registry: LocalRegistry
) -> None:
    pushed = push_busybox_image(registry.host, "cri/app:1", user="nobody")
    ref = f"{registry.host}/cri/app:1"
    spec = api_pb2.ImageSpec(image=ref)
    resp = stub.PullImage(api_pb2.PullImageRequest(image=spec), timeout=60)
    assert resp.image_ref == pushed.config_digest
    images = stub.ListImages(api_pb2.ListImagesRequest()).images
    assert [i.id for i in images] == [pushed.config_digest]
    filtered = stub.ListImages(
        api_pb2.ListImagesRequest(
            filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image="nothing:here"))
        )
    ).images
    assert list(filtered) == []
    status = stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec, verbose=True))
    assert status.image.id == pushed.config_digest
    assert list(status.image.repo_tags) == [ref]
    assert status.image.username == "nobody" and not status.image.HasField("uid")
    assert status.image.size > 1_000_000
    info = json.loads(status.info["info"])
    assert len(info["layers"]) == 1 and info["config"]["User"] == "nobody"
    fs = stub.ImageFsInfo(api_pb2.ImageFsInfoRequest()).image_filesystems[0]
    assert fs.used_bytes.value > 1_000_000 and fs.inodes_used.value > 10
    stub.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=resp.image_ref)))
    stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec))  # absent: still OK
    assert not stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec)).HasField("image")


def test_errors_map_to_codes(stub: api_pb2_grpc.ImageServiceStub, registry: LocalRegistry) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="Bad:Ref")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.PullImage(
            api_pb2.PullImageRequest(
                image=api_pb2.ImageSpec(image=f"{registry.host}/missing/img:1")
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cli_pull_ls_inspect_rm(
    tmp_path: Path, conf: Path, registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_busybox_image(registry.host, "cli/app:1", cmd=["true"])
    base = [
        "images",
        "--config",
        str(tmp_path / "none.toml"),
        "--root",
        str(tmp_path / "root"),
        "--registries-conf",
        str(conf),
    ]
    (tmp_path / "none.toml").write_text("")
    ref = f"{registry.host}/cli/app:1"
    assert cli_main([*base, "pull", "-q", ref]) == 0
    assert capsys.readouterr().out.strip() == pushed.config_digest
    assert cli_main([*base, "ls"]) == 0
    assert ref in capsys.readouterr().out
    assert cli_main([*base, "inspect", ref]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == pushed.config_digest
    assert cli_main([*base, "rm", ref]) == 0
    assert capsys.readouterr().out.startswith("removed sha256:")
    assert cli_main([*base, "ls", "-q"]) == 0
    assert pushed.config_digest not in capsys.readouterr().out
