"""Fixtures for the runc backend against the real host: runc 1.1, overlayfs, namespaces.

The image is a single layer directory made from busybox-static, so these tests
do not depend on the image service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.runc.runc_itest_helpers import RECORDS
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.model import ImageInfo

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def busybox_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need(os.geteuid() == 0, "needs root")
    _need(shutil.which("runc") is not None, "runc is not installed")
    out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True, check=False)
    _need(os.path.exists(BUSYBOX) and "statically linked" in out.stdout,
          "needs busybox-static")  # fmt: skip
    layer = tmp_path_factory.mktemp("layer")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/app"):
        (layer / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, layer / "bin" / "busybox")
    subprocess.run(["chroot", str(layer), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (layer / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (layer / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:3000:app\n")
    return layer


@pytest.fixture
def image(busybox_layer: Path) -> ImageInfo:
    return ImageInfo(
        id="sha256:" + "b" * 64,
        name="localhost/busybox:test",
        layer_dirs=(str(busybox_layer),),
        config={"Env": ["PATH=/bin", "FROM_IMAGE=1"], "Cmd": ["sh"], "WorkingDir": "/"},
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def make_backend(workdir: Path) -> Callable[[], RuncBackend]:
    cgroup_parent = f"/vmcri-test-{uuid.uuid4().hex[:8]}"

    def make() -> RuncBackend:
        layout = Layout(workdir / "state", workdir / "root")
        options = RuncOptions(cgroup_parent=cgroup_parent)
        return RuncBackend(options, layout, RealHost(), RECORDS)

    return make


@pytest.fixture
def backend(make_backend: Callable[[], RuncBackend], workdir: Path) -> Iterator[RuncBackend]:
    RECORDS.containers.clear()
    RECORDS.exited.clear()
    be = make_backend()
    yield be
    _force_cleanup(be, workdir)


def _force_cleanup(be: RuncBackend, workdir: Path) -> None:
    """Whatever a failed test left: containers, sandboxes, cgroups."""
    containers = be.layout.state / "containers"
    if containers.exists():
        for d in containers.iterdir():
            be._cleanup_container(d.name)
    sandboxes = be.layout.state / "sandboxes"
    if sandboxes.exists():
        for d in sandboxes.iterdir():
            be.agents.stop(d.name)
            be.pods.teardown(d.name)
    for controller in ("memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "freezer",
                       "blkio", "systemd", "unified", ""):  # fmt: skip
        top = Path("/sys/fs/cgroup", controller, be.options.cgroup_parent.lstrip("/"))
        if top.is_dir():
            for sub in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    sub.rmdir()
            top.rmdir()
