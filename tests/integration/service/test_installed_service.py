"""scripts/install.sh into a scratch prefix: the installed command serves CRI outside the
clone, reports readiness over sd_notify, and `vmcri stop` leaves its pods running."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.service.conftest import Busybox, remove_pods, run_runc_pod
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Installed:
    prefix: Path
    config_dir: Path
    unit: Path

    @property
    def vmcri(self) -> Path:
        return self.prefix / "bin" / "vmcri"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if os.geteuid() != 0:
        pytest.skip("scripts/install.sh needs root")
    tmp = tmp_path_factory.mktemp("install")
    args = ["--prefix", str(tmp / "opt"), "--config-dir", str(tmp / "etc")]
    args += ["--unit-dir", str(tmp / "units")]
    for _ in range(2):  # the second run proves it idempotent
        result = subprocess.run(
            [str(REPO / "scripts" / "install.sh"), *args],
            capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return Installed(tmp / "opt", tmp / "etc", tmp / "units" / "vmcri.service")


def test_layout_is_outside_the_clone(installed: Installed) -> None:
    found = subprocess.run(
        [str(installed.prefix / "venv/bin/python"), "-I", "-c",
         "import vmcri, vmcri.handlers.vm.render as r; print(vmcri.__file__, r.TEMPLATE_DIR)"],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()  # fmt: skip
    lib = installed.prefix / "lib" / "vmcri"
    assert found == [str(lib / "vmcri" / "__init__.py"), str(lib / "templates")]
    assert (lib / "guest/build/VERSION").read_text() == (REPO / "guest/build/VERSION").read_text()
    config = (installed.config_dir / "config.toml").read_text()
    assert (
        config
        == subprocess.run(
            [str(installed.vmcri), "config", "default"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_unit_is_valid_and_spares_pods(installed: Installed) -> None:
    unit = installed.unit.read_text()
    for line in ("Type=notify", "KillMode=process", "After=network.target local-fs.target "
                 "libvirtd.service", "Wants=libvirtd.service",
                 f"ExecStart={installed.vmcri} serve --config "
                 f"{installed.config_dir / 'config.toml'}"):  # fmt: skip
        assert line in unit.splitlines(), line
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed.unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "vmcri.service" not in result.stderr, result.stderr  # no warning about our unit


@contextlib.contextmanager
def _notify_socket(name: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(60)
    try:
        yield sock
    finally:
        sock.close()


def _serve(installed: Installed, config: Path, log: Path, notify: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": f"@{notify}"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(installed.vmcri), "serve", "--config", str(config)],
            stdout=out, stderr=out, env=env, cwd="/",
        )  # fmt: skip


def test_installed_daemon_serves_cri_and_stops_leaving_pods(
    installed: Installed, busybox: Busybox, tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "vmcri.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        f'root = "{tmp_path / "root"}"\nstate = "{tmp_path / "state"}"\nsocket = "{sock}"\n'
        f'registries_conf = "{busybox.registries_conf}"\n{NO_POD_NETWORK}'
    )
    log = tmp_path / "daemon.log"
    name = f"vmcri-itest-{os.getpid()}"
    created: list[str] = []
    with _notify_socket(name) as notify:
        daemon = _serve(installed, config, log, name)
        try:
            # READY=1 comes only once the socket serves: no polling on the socket needed.
            assert notify.recv(4096).startswith(b"READY=1"), log.read_text()
            channel = grpc.insecure_channel(f"unix:{sock}")
            runtime = api_pb2_grpc.RuntimeServiceStub(channel)
            images = api_pb2_grpc.ImageServiceStub(channel)
            assert runtime.Version(pb.VersionRequest(), timeout=10).runtime_name == "vmcri"
            container_id = run_runc_pod(runtime, images, busybox.image, tmp_path / "logs", created)
            stop = subprocess.run(
                [str(installed.vmcri), "stop", "--config", str(config)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert stop.returncode == 0, stop.stderr
            assert f"pid {daemon.pid}" in stop.stdout
            assert daemon.wait(timeout=30) == 0
            assert notify.recv(4096) == b"STOPPING=1"
            assert not sock.exists()
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        # A new daemon on the same state finds the container still running: stop spared it.
        # It also removes whatever pod the first half made, however that half ended.
        daemon = _serve(installed, config, log, name)
        runtime = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix:{sock}"))
        try:
            assert notify.recv(4096).startswith(b"READY=1"), log.read_text()
            status = runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=container_id), timeout=30
            ).status
            assert status.state == pb.CONTAINER_RUNNING
        finally:
            remove_pods(runtime, created)
            subprocess.run([str(installed.vmcri), "stop", "--config", str(config)], timeout=60)
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait()
