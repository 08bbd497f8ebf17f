"""Attacks on the node-service surface: systemd's notify socket, the metrics endpoint."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.daemon.conftest import start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK
from tests.integration.service.conftest import (
    Busybox,
    free_loopback_port,
    remove_pods,
    run_runc_pod,
    serve_busybox,
)
from tests.support.wait import wait_for

PROBE = ["sh", "-c", "ls -a /run/notify 2>&1; echo NOTIFY=$NOTIFY_SOCKET; echo probed"]
EVIL = "evil-name-0123456789abcdef"


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Busybox]:
    yield from serve_busybox(tmp_path_factory)


@pytest.mark.integration
def test_containers_never_get_the_service_notify_socket(
    busybox: Busybox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # runc proxies $NOTIFY_SOCKET into a container it starts: the container could then
    # tell systemd "READY=1" or "MAINPID=..." in vmcri's name (and runc start fails here).
    notify_path = tmp_path / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    config = tmp_path / "config.toml"
    config.write_text(f'registries_conf = "{busybox.registries_conf}"\n{NO_POD_NETWORK}')
    daemon = start_daemon(tmp_path, config=config)
    monkeypatch.delenv("NOTIFY_SOCKET")
    runtime, images = daemon.runtime(), daemon.images()
    created: list[str] = []
    try:
        assert receiver.recv(4096).startswith(b"READY=1")
        run_runc_pod(runtime, images, busybox.image, tmp_path / "logs", created, PROBE)
        log = tmp_path / "logs" / "sleeper.log"
        wait_for(lambda: log.exists() and "probed" in log.read_text(), 30, "the probe's output")
        output = log.read_text()
        assert "No such file or directory" in output  # no /run/notify in the container
        assert "NOTIFY=\n" in output  # and no $NOTIFY_SOCKET in its environment
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(4096)  # nothing but the daemon's own READY=1 reached systemd
    finally:
        remove_pods(runtime, created)
        stop_daemon(daemon)
        receiver.close()


@pytest.mark.integration
def test_clients_and_pods_cannot_mint_metric_series(busybox: Busybox, tmp_path: Path) -> None:
    port = free_loopback_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'registries_conf = "{busybox.registries_conf}"\n[metrics]\naddress = "127.0.0.1:{port}"\n'
        + NO_POD_NETWORK
    )
    daemon = start_daemon(tmp_path, config=config)
    runtime, images = daemon.runtime(), daemon.images()
    created: list[str] = []
    try:
        call = daemon.channel().unary_unary(
            f"/runtime.v1.RuntimeService/{EVIL}",
            request_serializer=bytes,
            response_deserializer=bytes,
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
        run_runc_pod(runtime, images, busybox.image, tmp_path / "logs", created, pod_name=EVIL)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'method="RunPodSandbox"' in text  # the scrape works...
        assert EVIL not in text  # ...and neither the bogus method nor the pod name is a label
    finally:
        remove_pods(runtime, created)
        stop_daemon(daemon)


def test_metrics_on_a_public_address_is_refused_at_start(tmp_path: Path) -> None:
    port = free_loopback_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[metrics]\naddress = "0.0.0.0:{port}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "vmcri", "serve", "--config", str(config),
         "--socket", str(tmp_path / "s.sock"), "--root", str(tmp_path / "root"),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "metrics.address: '0.0.0.0' is not a loopback address" in result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
