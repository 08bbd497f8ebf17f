"""hostPorts with a host IP (TCP and UDP), PortForward into a CNI pod, and DEL without a netns."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.network.conftest import HTTP_PORT, NetEnv
from tests.integration.network.test_cni_pods import _answers, _http_get
from tests.integration.streaming.clients import SpdyClient
from tests.support.ports import free_port
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.host.namespaces import CLONE_NEWNET, setns

pytestmark = pytest.mark.integration

UDP_PORT = 5353


def _udp_echo_in(netns: str, ready: threading.Event, stop: threading.Event) -> None:
    """An echo server inside the pod's network namespace (busybox has no UDP server)."""
    fd = os.open(netns, os.O_RDONLY)
    setns(fd, CLONE_NEWNET)  # this thread only; it ends with the test
    os.close(fd)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("0.0.0.0", UDP_PORT))
        server.settimeout(0.2)
        ready.set()
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(1024)
            except TimeoutError:
                continue
            server.sendto(b"echo:" + data, peer)


@pytest.fixture
def udp_echo(env: NetEnv) -> Iterator[Callable[[str], None]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(netns: str) -> None:
        ready = threading.Event()
        thread = threading.Thread(target=_udp_echo_in, args=(netns, ready, stop), daemon=True)
        thread.start()
        threads.append(thread)
        assert ready.wait(10), "the UDP echo server did not start"

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def _udp_ask(host: str, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(1)
        client.sendto(b"ping", (host, port))
        try:
            return client.recv(1024)
        except TimeoutError:
            return b""


def test_host_ip_mappings_tcp_and_udp(env: NetEnv, udp_echo: Callable[[str], None]) -> None:
    tcp_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = env.pod_config(
        "host-ip",
        [
            pb.PortMapping(container_port=HTTP_PORT, host_port=tcp_port, host_ip=env.gateway),
            pb.PortMapping(
                protocol=pb.UDP, container_port=UDP_PORT, host_port=udp_port, host_ip=env.gateway
            ),
        ],
    )
    sandbox = env.run_pod(cfg)
    env.start_server(sandbox, cfg, "host-ip")
    ip = env.pod_status(sandbox).network.ip
    udp_echo(str(env.daemon.state / "netns" / sandbox))
    wait_for(lambda: _answers(ip, HTTP_PORT, "host-ip"), 20, "the pod's server")

    assert _http_get(env.gateway, tcp_port) == "host-ip"
    # Bound to the gateway address only: the host's loopback does not forward it.
    with pytest.raises(OSError):
        _http_get("127.0.0.1", tcp_port)
    deadline = time.monotonic() + 10
    answer = b""
    while answer != b"echo:ping" and time.monotonic() < deadline:
        answer = _udp_ask(env.gateway, udp_port)
    assert answer == b"echo:ping"

    env.remove(sandbox)
    assert env.leftovers() == []


def test_port_forward_reaches_the_pod_in_its_cni_netns(env: NetEnv) -> None:
    cfg = env.pod_config("forwarded")
    sandbox = env.run_pod(cfg)
    env.start_server(sandbox, cfg, "forwarded")
    ip = env.pod_status(sandbox).network.ip
    wait_for(lambda: _answers(ip, HTTP_PORT, "forwarded"), 20, "the pod's server")
    url = env.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=sandbox), timeout=30).url
    client = SpdyClient(url, protocols=("portforward.k8s.io",))
    try:
        error = client.open(streamtype="error", port=str(HTTP_PORT), requestid="1")
        data = client.open(streamtype="data", port=str(HTTP_PORT), requestid="1")
        client.write(data, b"GET /id HTTP/1.0\r\n\r\n")
        body = client.read_all(data)
        assert client.read_all(error) == b""
    finally:
        client.close()
    assert body.endswith(b"forwarded\n")
    env.remove(sandbox)
    assert env.leftovers() == []


def test_del_releases_the_ip_when_the_netns_is_already_gone(env: NetEnv) -> None:
    sandbox = env.run_pod(env.pod_config("lost-netns"))
    ip = env.pod_status(sandbox).network.ip
    lease = env.ipam_dir / "vmcri-test" / ip
    assert lease.exists()
    pin = Path(env.daemon.state / "netns" / sandbox)
    # Someone else unpins it: the namespace (and the veth in it) is gone, the lease is not.
    subprocess.run(["umount", "-l", str(pin)], check=True)
    env.remove(sandbox)
    assert not lease.exists()
    assert env.leftovers() == []


def test_bandwidth_annotations_shape_the_pod(env: NetEnv) -> None:
    env.write_conf(env.conflist(extra=[{"type": "bandwidth", "capabilities": {"bandwidth": True}}]))
    try:
        cfg = env.pod_config("shaped")
        cfg.annotations["kubernetes.io/ingress-bandwidth"] = "10M"
        sandbox = env.run_pod(cfg)
        veths = subprocess.run(
            ["ip", "-o", "link", "show", "master", env.bridge],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        host_veth = veths.split(":")[1].strip().split("@")[0]
        qdisc = subprocess.run(
            ["tc", "qdisc", "show", "dev", host_veth], capture_output=True, text=True, check=True
        ).stdout
        assert "tbf" in qdisc and "10Mbit" in qdisc, qdisc
        env.remove(sandbox)
    finally:
        env.write_conf(env.conflist())
    assert env.leftovers() == []
