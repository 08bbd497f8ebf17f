"""The VM's NIC joined to a pod network namespace, with a real libvirt VM.

The test plays CNI: it makes a pod netns with a veth whose ``eth0`` end carries
the pod address (10.250.N.2/24) and whose host end carries the gateway, and
hands the backend the PodNetwork CNI would have stored. The host must then reach
a TCP echo server in a container of the VM at the pod IP, and after removal no
tap, qdisc or redirect may remain. Traffic stays inside namespaces the test owns.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import SHARED_TEMPLATES
from tests.integration.vm.conftest import TEMPLATE_TIMEOUT_S, destroy_domain, domain_exists
from tests.support.vm_backend import vm_context
from tests.support.wait import wait_for
from vmcri.handlers.vm.backend import VmBackend
from vmcri.handlers.vm.nic import tap_name
from vmcri.handlers.vm.options import VmOptions
from vmcri.handlers.vm.pool_vms import pool_vms_on_disk
from vmcri.host.mounts import mount_points
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, ImageInfo, Metadata, PodConfig
from vmcri.network.tap import NetlinkTaps
from vmcri.store.pod_network import IpConfig, NetInterface, PodNetwork, Route
from vmcri.store.records import ContainerRecord, SandboxRecord, SandboxState
from vmcri.store.store import Store

pytestmark = pytest.mark.integration

ECHO_PORT = 8080
BOOT_TIMEOUT_S = 240


def ip(*args: str, netns: str = "") -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class PodNetns:
    name: str
    host_veth: str
    subnet: int

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @property
    def pod_ip(self) -> str:
        return f"10.250.{self.subnet}.2"

    @property
    def gateway(self) -> str:
        return f"10.250.{self.subnet}.1"

    def network(self) -> PodNetwork:
        """What the CNI layer stores: here the MAC and MTU come from the CNI result."""
        link = json.loads(ip("-j", "link", "show", "eth0", netns=self.name))[0]
        return PodNetwork(
            netns_path=self.path,
            interfaces=(
                NetInterface(name=self.host_veth),
                NetInterface(name="eth0", mac=link["address"], sandbox=self.path, mtu=1400),
            ),
            ips=(IpConfig(f"{self.pod_ip}/24", self.gateway, 1),),
            routes=(Route("0.0.0.0/0", self.gateway),),
            config='{"cniVersion": "1.0.0", "name": "test", "plugins": []}',
        )


def _links(netns: str = "") -> set[str]:
    return {link["ifname"] for link in json.loads(ip("-j", "link", "show", netns=netns))}


def _qdiscs(netns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "qdisc", "show"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def pod_netns() -> Iterator[PodNetns]:
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun on this host")
    tag = secrets.token_hex(3)
    netns = PodNetns(
        name=f"vmcri-nic-{tag}", host_veth=f"vmnic{tag}", subnet=secrets.randbelow(200) + 20
    )
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    try:
        ip(
            "link",
            "add",
            netns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name,
        )
        ip("link", "set", netns.host_veth, "mtu", "1400")
        ip("addr", "add", f"{netns.gateway}/24", "dev", netns.host_veth)
        ip("link", "set", netns.host_veth, "up")
        ip("link", "set", "eth0", "mtu", "1400", netns=netns.name)
        ip("addr", "add", f"{netns.pod_ip}/24", "dev", "eth0", netns=netns.name)
        ip("link", "set", "eth0", "up", netns=netns.name)
        ip("link", "set", "lo", "up", netns=netns.name)
        yield netns
    finally:
        subprocess.run(["ip", "link", "del", netns.host_veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns.name], capture_output=True)


def busybox_layer(root: Path) -> Path:
    """A one-layer image: the host's static busybox as /bin/busybox, /bin/sh and /bin/cat."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("no busybox on the host (apt-get install busybox-static)")
    layer = root / "layer"
    (layer / "bin").mkdir(parents=True)
    shutil.copy2(busybox, layer / "bin" / "busybox")
    for applet in ("sh", "cat"):
        os.symlink("busybox", layer / "bin" / applet)
    for name in ("proc", "sys", "dev", "etc", "tmp"):
        (layer / name).mkdir()
    return layer


class WatchedTaps(NetlinkTaps):
    """The real taps, noting how the tap looked in the host netns when it was moved out."""

    def __init__(self) -> None:
        self.host_flags_at_attach: list[str] = []

    def attach(self, tap: str, netns_path: str, peer: str, mtu: int) -> None:
        self.host_flags_at_attach = json.loads(ip("-j", "link", "show", tap))[0]["flags"]
        super().attach(tap, netns_path, peer, mtu)


def make_backend(
    tmp: Path, taps: NetlinkTaps | None = None, pool_size: int = 0
) -> tuple[VmBackend, Store]:
    store = Store(tmp / "root")
    context = vm_context(tmp, store)
    options = VmOptions(
        shared_fs="9p",
        boot_timeout_s=BOOT_TIMEOUT_S,
        template_dir=str(SHARED_TEMPLATES),
        pool_size=pool_size,
    )
    backend = VmBackend(options, context, taps=taps)

    # Restored pods, as in production: the NIC is then hotplugged after the restore.
    def templated() -> bool:
        return any(c.type == "VmTemplates" and c.status for c in backend.conditions())

    wait_for(templated, TEMPLATE_TIMEOUT_S, "a VM template")
    if pool_size:

        def full() -> bool:
            return sum(vm.idle for vm in pool_vms_on_disk(context.root)) >= pool_size

        wait_for(full, TEMPLATE_TIMEOUT_S, "a full pool")
    return backend, store


def echo(address: str, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload`` and read the echo at once (a thread writes, so neither side stalls)."""
    with socket.create_connection((address, ECHO_PORT), timeout=timeout) as conn:

        def send() -> None:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        while chunk := conn.recv(65536):
            received += chunk
        sender.join(timeout)
        return bytes(received)


def can_echo(address: str) -> bool:
    try:
        return echo(address, b"ping\n", timeout=2.0) == b"ping\n"
    except OSError:
        return False


def measure(address: str) -> dict[str, float]:
    """Round-trip latency (64-byte messages, one connection) and echo throughput."""
    with socket.create_connection((address, ECHO_PORT), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rounds = 50
        started = time.monotonic()
        for _ in range(rounds):
            conn.sendall(b"x" * 64)
            got = b""
            while len(got) < 64:
                got += conn.recv(64 - len(got))
        rtt_ms = (time.monotonic() - started) / rounds * 1000
    size = 4 * 1024 * 1024
    started = time.monotonic()
    assert len(echo(address, os.urandom(size), timeout=120)) == size
    mbit = size * 8 * 2 / (time.monotonic() - started) / 1e6  # both directions carried it
    return {"rtt_ms": round(rtt_ms, 2), "echo_mbit_s": round(mbit, 1)}


@pytest.mark.parametrize("pool_size", [0, 1], ids=["restored", "pooled"])
def test_the_host_reaches_a_vm_pod_at_its_pod_ip_and_removal_leaves_nothing(
    pod_netns: PodNetns, short_tmp: Path, pool_size: int
) -> None:
    taps = WatchedTaps()
    backend, store = make_backend(short_tmp, taps, pool_size)
    network = pod_netns.network()
    config = PodConfig(metadata=Metadata(name="nic", uid="uid-nic", namespace="test"))
    sandbox_id = backend.new_sandbox_id(config)  # a pool VM's, with a pool
    sandbox = store.sandboxes.add(
        SandboxRecord(id=sandbox_id, handler="vm", backend="vm", config=config, network=network)
    )
    tap = tap_name(sandbox.id)
    try:
        started = backend.run_sandbox(sandbox)
        # The NIC was hotplugged after the restore, or after the pool VM resumed.
        assert started.runtime["start"] == ("pooled" if pool_size else "restored")
        sandbox = store.sandboxes.set_fields(sandbox.id, state=SandboxState.READY)
        # While QEMU had it in the host netns the tap was down (libvirt leaves a managed='no'
        # tap alone), so no guest frame could reach the host's own stack; now it lives in
        # the pod netns, joined to eth0 both ways.
        assert "UP" not in taps.host_flags_at_attach
        assert tap not in _links()
        assert tap in _links(pod_netns.name)
        qdiscs = _qdiscs(pod_netns.name)
        assert "dev eth0" in qdiscs and f"dev {tap}" in qdiscs

        layer = busybox_layer(short_tmp)
        container = store.containers.add(
            ContainerRecord(
                id=new_id(),
                sandbox_id=sandbox.id,
                config=ContainerConfig(
                    metadata=Metadata(name="echo"),
                    image="busybox",
                    command=("/bin/busybox", "nc", "-ll", "-p", str(ECHO_PORT), "-e", "/bin/cat"),
                ),
                image_id="sha256:" + "0" * 64,
                image_name="busybox",
                log_path=str(short_tmp / "echo.log"),
            )
        )
        image = ImageInfo("sha256:" + "0" * 64, "busybox", (str(layer),), {})
        runtime = backend.create_container(sandbox, container, image)
        container = store.containers.set_fields(container.id, runtime=runtime)
        backend.supervisor.start(sandbox, container)

        wait_for(lambda: can_echo(pod_netns.pod_ip), 60, f"an echo from {pod_netns.pod_ip}")
        payload = os.urandom(256 * 1024)
        assert echo(pod_netns.pod_ip, payload) == payload
        print("host <-> VM pod:", measure(pod_netns.pod_ip))

        # The guest NIC answers ARP with the CNI interface's MAC (the pod IP's owner).
        neighbours = json.loads(ip("-j", "neigh", "show", pod_netns.pod_ip))
        assert neighbours and neighbours[0]["lladdr"] == network.interfaces[1].mac
    finally:
        backend.remove_sandbox(sandbox)
        destroy_domain(sandbox.id)
        if pool_size:
            backend._stop_pool()  # the daemon does at its exit

    assert not domain_exists(sandbox.id)
    assert tap not in _links() and tap not in _links(pod_netns.name)
    assert "ingress" not in _qdiscs(pod_netns.name)  # eth0's redirect went with the tap
    # The backend's own shared mount of its state dir stays; nothing of the pod does.
    assert mount_points(short_tmp / "state" / "backends" / "vm" / sandbox.id) == []


def test_a_vm_that_died_leaves_no_tap_after_removal(pod_netns: PodNetns, short_tmp: Path) -> None:
    backend, store = make_backend(short_tmp)
    config = PodConfig(metadata=Metadata(name="nicdie", uid="uid-nicdie", namespace="test"))
    sandbox = store.sandboxes.add(
        SandboxRecord(
            id=new_id(), handler="vm", backend="vm", config=config, network=pod_netns.network()
        )
    )
    tap = tap_name(sandbox.id)
    try:
        backend.run_sandbox(sandbox)
        assert tap in _links(pod_netns.name)
        destroy_domain(sandbox.id)  # the VM dies under the backend
        wait_for(lambda: not backend.sandbox_alive(sandbox), 30, "the VM to be gone")
    finally:
        backend.remove_sandbox(sandbox)
    assert tap not in _links() and tap not in _links(pod_netns.name)
    assert "ingress" not in _qdiscs(pod_netns.name)


def test_a_failed_start_leaves_no_tap(pod_netns: PodNetns, short_tmp: Path) -> None:
    """The pod interface vanishes before the VM's NIC can join it: the start fails clean."""
    backend, store = make_backend(short_tmp)
    network = pod_netns.network()
    ip("link", "del", "eth0", netns=pod_netns.name)  # CNI's veth is gone: attach must fail
    config = PodConfig(metadata=Metadata(name="nicfail", uid="uid-nicfail", namespace="test"))
    sandbox = store.sandboxes.add(
        SandboxRecord(id=new_id(), handler="vm", backend="vm", config=config, network=network)
    )
    tap = tap_name(sandbox.id)
    from vmcri.errors import NotFound

    with pytest.raises(NotFound, match="eth0"):
        backend.run_sandbox(sandbox)
    assert not domain_exists(sandbox.id)
    assert tap not in _links() and tap not in _links(pod_netns.name)


def _filters(netns: str, dev: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "filter", "show", "dev", dev, "ingress"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_taps_attach_idempotently_and_removal_is_complete_and_repeatable(
    pod_netns: PodNetns,
) -> None:
    """The netlink layer alone (no VM): the state a retried start or remove ends in."""
    taps = NetlinkTaps()
    tap = tap_name(secrets.token_hex(32))
    try:
        taps.create(tap)
        taps.create(tap)  # exists: left as is
        assert tap in _links()
        taps.attach(tap, pod_netns.path, "eth0", 1400)
        taps.attach(tap, pod_netns.path, "eth0", 1400)  # a retry: still one redirect each way
        assert tap not in _links() and tap in _links(pod_netns.name)
        for dev, target in (("eth0", tap), (tap, "eth0")):
            shown = _filters(pod_netns.name, dev)
            assert shown.count("mirred") == 1 and f"Redirect to device {target}" in shown
        link = taps.link(pod_netns.path, tap)
        assert link.mtu == 1400
    finally:
        taps.remove(tap, pod_netns.path, "eth0")
    assert tap not in _links() and tap not in _links(pod_netns.name)
    assert "ingress" not in _qdiscs(pod_netns.name)
    taps.remove(tap, pod_netns.path, "eth0")  # gone already: success


def test_a_tap_dies_with_its_pod_netns_and_removal_then_succeeds(pod_netns: PodNetns) -> None:
    taps = NetlinkTaps()
    tap = tap_name(secrets.token_hex(32))
    taps.create(tap)
    taps.attach(tap, pod_netns.path, "eth0", 0)
    subprocess.run(["ip", "netns", "del", pod_netns.name], check=True)
    # The netns dies in a kernel work item, which also deletes the veth's host end: once that
    # is gone the netns's devices are settled, and the tap must not be back in the host.
    wait_for(lambda: pod_netns.host_veth not in _links(), 30, "the pod netns to be cleaned up")
    taps.remove(tap, pod_netns.path, "eth0")
    assert tap not in _links()
