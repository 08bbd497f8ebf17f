"""A pod that forges addresses on the bridge must not take over another pod's IP or MAC.

The attackers: a runc pod's process with NET_RAW (the default capability set) sending
raw frames, a runc container with NET_ADMIN that gives itself the victim's IP, and a
privileged container in a VM pod doing the same in its guest. The victim is a runc
pod serving HTTP; the node (the bridge's gateway address) has talked to it, so it has
a neighbour entry for it. After every attack the entry still holds the victim's MAC,
the bridge still learns the victim's MAC on the victim's port, no forged IPv4 reaches
the node, and the victim still answers; the attackers' own traffic still works.

The NET_RAW attacker is this test's process in the pod's network namespace with an
AF_PACKET socket: exactly what NET_RAW grants a container (the busybox image has no
tool that writes raw frames), through the same ``eth0``. Only the test's own bridge,
subnet and namespaces see any of it.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.network.conftest import HTTP_PORT, NetEnv, net_env
from tests.integration.network.test_cni_pods import _answers, _http_get, _pod_get
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.network.antispoof import link_local, table_name

pytestmark = pytest.mark.integration

VM = "vm"
BROADCAST = "ff:ff:ff:ff:ff:ff"
SENDER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS: no egress hook in the pod
s.bind(("eth0", 0))
for frame in sys.argv[1:]:
    for _ in range(3):
        s.send(bytes.fromhex(frame))
"""


@pytest.fixture(scope="module")
def env() -> Iterator[NetEnv]:
    with net_env() as made:
        yield made


def _netns(env: NetEnv, sandbox_id: str) -> Path:
    return env.daemon.state / "netns" / sandbox_id


def _in_pod(env: NetEnv, sandbox_id: str, *argv: str) -> str:
    done = subprocess.run(
        ["nsenter", f"--net={_netns(env, sandbox_id)}", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, (argv[:2], done.stderr)
    return done.stdout


def _pod_mac(env: NetEnv, sandbox_id: str) -> str:
    return str(
        json.loads(_in_pod(env, sandbox_id, "ip", "-j", "link", "show", "eth0"))[0]["address"]
    )


def _neighbour(env: NetEnv, ip: str) -> str:
    out = subprocess.run(
        ["ip", "-j", "neigh", "show", "to", ip, "dev", env.bridge],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries = json.loads(out or "[]")
    return str(entries[0].get("lladdr", "")) if entries else ""


def _fdb_port(env: NetEnv, mac: str) -> str:
    """The bridge port the bridge has learnt ``mac`` on ("" if none)."""
    out = subprocess.run(
        ["bridge", "-j", "fdb", "show", "br", env.bridge],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ports = [e["ifname"] for e in json.loads(out or "[]") if e.get("mac") == mac]
    return str(ports[0]) if ports else ""


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _arp(src_mac: str, op: int, sender_mac: str, sender_ip: str, target_ip: str) -> str:
    """A broadcast ARP frame (op 1: request, 2: reply) as hex."""
    ether = _mac(BROADCAST) + _mac(src_mac) + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
    arp += _mac(sender_mac) + socket.inet_aton(sender_ip)
    arp += bytes(6) + socket.inet_aton(target_ip)
    return (ether + arp).hex()


def _udp(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, port: int, payload: bytes) -> str:
    """An IPv4 UDP frame as hex (UDP checksum 0: none, as IPv4 allows)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src_ip),
        socket.inet_aton(dst_ip),
    )
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return (_mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + header + udp).hex()


def _send_raw(env: NetEnv, sandbox_id: str, *frames: str) -> None:
    _in_pod(env, sandbox_id, sys.executable, "-c", SENDER, *frames)


def _container(
    env: NetEnv, sandbox_id: str, config: pb.PodSandboxConfig, name: str, caps: list[str]
) -> str:
    security = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=caps) if caps else None,
        privileged=config.linux.security_context.privileged,
    )
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=env.image),
        command=["sleep", "3600"],
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(security_context=security),
    )
    request = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
    )
    container_id = str(env.runtime.CreateContainer(request, timeout=60).container_id)
    env.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
    return container_id


def _claim(env: NetEnv, container_id: str, victim_ip: str) -> None:
    """The attacker takes the victim's IP as its own and announces it (gratuitous ARP)."""
    script = (
        f"ip addr add {victim_ip}/32 dev eth0 && "
        f"busybox arping -U -c 3 -w 3 -s {victim_ip} -I eth0 {victim_ip}; "
        f"busybox arping -A -c 3 -w 3 -s {victim_ip} -I eth0 {victim_ip}; "
        f"ip addr del {victim_ip}/32 dev eth0"
    )
    result = env.exec(container_id, ["sh", "-c", script])
    assert result.exit_code == 0, (result.exit_code, result.stderr)


def _victim(env: NetEnv, name: str) -> tuple[str, str, str, str]:
    """A runc pod serving HTTP, known to the node: (sandbox, server, IP, MAC)."""
    config = env.pod_config(name)
    sandbox_id = env.run_pod(config)
    server = env.start_server(sandbox_id, config, "victim")
    ip = env.pod_status(sandbox_id).network.ip
    wait_for(lambda: _answers(ip, HTTP_PORT, "victim"), 30, "the victim's server")
    mac = _pod_mac(env, sandbox_id)
    assert _neighbour(env, ip) == mac
    return sandbox_id, server, ip, mac


def _assert_victim_intact(env: NetEnv, victim_ip: str, victim_mac: str, victim_id: str) -> None:
    assert _neighbour(env, victim_ip) == victim_mac
    assert _fdb_port(env, victim_mac) == _host_peer(env, victim_id)
    assert _http_get(victim_ip, HTTP_PORT) == "victim"


def _host_peer(env: NetEnv, sandbox_id: str) -> str:
    link = json.loads(_in_pod(env, sandbox_id, "ip", "-j", "link", "show", "eth0"))[0]
    peers = json.loads(
        subprocess.run(
            ["ip", "-j", "link", "show", "master", env.bridge],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return str(next(p["ifname"] for p in peers if p["ifindex"] == link["link_index"]))


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_a_runc_pod_with_net_raw_cannot_take_over_another_pods_ip_or_mac(env: NetEnv) -> None:
    victim_id, _, victim_ip, victim_mac = _victim(env, "victim-of-raw")
    config = env.pod_config("raw-attacker")
    attacker_id = env.run_pod(config)
    attacker = env.start_server(attacker_id, config, "attacker")
    attacker_ip = env.pod_status(attacker_id).network.ip
    attacker_mac = _pod_mac(env, attacker_id)
    gateway_mac = json.loads(
        subprocess.run(
            ["ip", "-j", "link", "show", env.bridge], capture_output=True, text=True, check=True
        ).stdout
    )[0]["address"]
    # Its own traffic works: to the victim, to the node, and the node to it.
    assert _pod_get(env, attacker, victim_ip, HTTP_PORT) == "victim"
    assert env.exec(attacker, ["busybox", "ping", "-c", "1", "-W", "5", env.gateway]).exit_code == 0
    wait_for(lambda: _answers(attacker_ip, HTTP_PORT, "attacker"), 30, "the attacker's server")
    # And the pod's namespace takes no router advertisements.
    assert _in_pod(env, attacker_id, "cat", "/proc/sys/net/ipv6/conf/all/accept_ra").strip() == "0"
    assert _in_pod(env, attacker_id, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_ra").strip() == "0"

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind((env.gateway, 0))
        listener.settimeout(10)
        port = listener.getsockname()[1]
        _send_raw(
            env,
            attacker_id,
            # Gratuitous ARP request and reply: "the victim's IP is at my MAC".
            _arp(attacker_mac, 1, attacker_mac, victim_ip, victim_ip),
            _arp(attacker_mac, 2, attacker_mac, victim_ip, victim_ip),
            # The same with the victim's MAC as source: the bridge would learn it here.
            _arp(victim_mac, 2, victim_mac, victim_ip, victim_ip),
            # IPv4 from the victim's address, then (the marker) from the pod's own.
            _udp(attacker_mac, gateway_mac, victim_ip, env.gateway, port, b"forged"),
            _udp(attacker_mac, gateway_mac, attacker_ip, env.gateway, port, b"own"),
        )
        received: list[tuple[bytes, str]] = []
        while b"own" not in [data for data, _ in received]:
            data, source = listener.recvfrom(64)
            received.append((data, source[0]))
    # The marker came last, so the node has seen (or dropped) every forgery by now.
    _assert_victim_intact(env, victim_ip, victim_mac, victim_id)
    assert received == [(b"own", attacker_ip)]

    for sandbox_id in (attacker_id, victim_id):
        env.remove(sandbox_id)
    assert table_name(attacker_id) not in _tables()
    assert env.leftovers() == []


def test_a_runc_container_with_net_admin_that_claims_the_victims_ip_is_not_believed(
    env: NetEnv,
) -> None:
    victim_id, _, victim_ip, victim_mac = _victim(env, "victim-of-admin")
    config = env.pod_config("admin-attacker")
    attacker_id = env.run_pod(config)
    attacker = _container(env, attacker_id, config, "claim", ["NET_ADMIN", "NET_RAW"])
    assert _pod_get(env, attacker, victim_ip, HTTP_PORT) == "victim"
    _claim(env, attacker, victim_ip)
    # A new MAC of its own choosing is not the pod's either.
    script = (
        "ip link set eth0 down && ip link set eth0 address 0a:58:01:02:03:04 && ip link set eth0 up"
    )
    assert env.exec(attacker, ["sh", "-c", script]).exit_code == 0
    _claim(env, attacker, victim_ip)
    _assert_victim_intact(env, victim_ip, victim_mac, victim_id)
    for sandbox_id in (attacker_id, victim_id):
        env.remove(sandbox_id)
    assert env.leftovers() == []


def test_a_vm_pods_privileged_container_cannot_take_over_another_pods_ip(env: NetEnv) -> None:
    victim_id, _, victim_ip, victim_mac = _victim(env, "victim-of-vm")
    config = env.pod_config("vm-attacker")
    config.linux.security_context.privileged = True
    attacker_id = env.run_pod(config, VM)
    attacker = _container(env, attacker_id, config, "claim", [])
    attacker_ip = env.pod_status(attacker_id).network.ip
    assert ipaddress.ip_address(attacker_ip) in ipaddress.ip_network(f"{env.subnet}.0/24")
    # Its own traffic works, both ways.
    assert _pod_get(env, attacker, victim_ip, HTTP_PORT) == "victim"
    assert env.exec(attacker, ["busybox", "ping", "-c", "1", "-W", "5", env.gateway]).exit_code == 0
    # The guest's link-local address is the one the guard allows (EUI-64 of the pod MAC).
    local = env.exec(attacker, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
    assert f" {link_local(_pod_mac(env, attacker_id))}/64 " in local.stdout.decode(), local
    # The guest takes no router advertisements either.
    for scope in ("all", "eth0"):
        path = f"/proc/sys/net/ipv6/conf/{scope}/accept_ra"
        assert env.exec(attacker, ["cat", path]).stdout.decode().strip() == "0", scope
    _claim(env, attacker, victim_ip)
    _assert_victim_intact(env, victim_ip, victim_mac, victim_id)
    # Its own address again, from the guest after the attack: still its own.
    assert env.exec(attacker, ["busybox", "ping", "-c", "1", "-W", "5", env.gateway]).exit_code == 0
    for sandbox_id in (attacker_id, victim_id):
        env.remove(sandbox_id)
    assert table_name(attacker_id) not in _tables()
    assert env.leftovers() == []


def _icmp6(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, icmp_type: int, body: bytes
) -> str:
    """An ICMPv6 frame (hop limit 255, as neighbour discovery wants) as hex."""
    src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
    message = struct.pack("!BBH", icmp_type, 0, 0) + body
    pseudo = src + dst + struct.pack("!I3xB", len(message), socket.IPPROTO_ICMPV6)
    data = pseudo + message
    total = sum(struct.unpack(f"!{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    message = message[:2] + struct.pack("!H", ~total & 0xFFFF) + message[4:]
    header = struct.pack("!IHBB", 0x60000000, len(message), socket.IPPROTO_ICMPV6, 255)
    frame = _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + header + src + dst + message
    return frame.hex()


def _dual_stack(env: NetEnv, prefix: str) -> str:
    conf = json.loads(env.conflist())
    ipam = conf["plugins"][0]["ipam"]
    ipam["ranges"].append([{"subnet": f"{prefix}/64"}])
    ipam["routes"].append({"dst": "::/0"})
    return json.dumps(conf)


def _v6(env: NetEnv, sandbox_id: str) -> str:
    status = env.pod_status(sandbox_id).network
    return next(ip.ip for ip in status.additional_ips if ":" in ip.ip)


def test_a_runc_pod_cannot_advertise_another_pods_ipv6_address_or_be_a_router(
    env: NetEnv,
) -> None:
    prefix = f"fd{random.randint(0, 0xFF):02x}:{random.randint(0, 0xFFFF):x}::"
    env.write_conf(_dual_stack(env, prefix))
    try:
        victim_id, _, _, _ = _victim(env, "v6-victim")
        victim_v6, victim_mac = _v6(env, victim_id), _pod_mac(env, victim_id)
        config = env.pod_config("v6-attacker")
        attacker_id = env.run_pod(config)
        attacker = env.start_server(attacker_id, config, "attacker")
        attacker_v6, attacker_mac = _v6(env, attacker_id), _pod_mac(env, attacker_id)
        gateway_v6 = f"{prefix}1"
        # The link-local address the guard allows is the one the pod has (EUI-64).
        local = _in_pod(
            env, attacker_id, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"
        )
        assert f" {link_local(attacker_mac)}/64 " in local, local
        # Its own IPv6 works: node to pod, pod to pod, pod to node.
        wait_for(lambda: _answers(victim_v6, HTTP_PORT, "victim"), 30, "the victim over IPv6")
        wait_for(lambda: _answers(attacker_v6, HTTP_PORT, "attacker"), 30, "the attacker over v6")
        assert _pod_get(env, attacker, victim_v6, HTTP_PORT) == "victim"
        ping = ["busybox", "ping", "-6", "-c", "1", "-W", "5", gateway_v6]
        assert env.exec(attacker, ping).exit_code == 0
        assert _neighbour(env, victim_v6) == victim_mac

        bridge_mac = json.loads(
            subprocess.run(
                ["ip", "-j", "link", "show", env.bridge], capture_output=True, text=True, check=True
            ).stdout
        )[0]["address"]
        own_ll = link_local(attacker_mac)
        override = struct.pack("!I", 0x20000000)  # O: replace the cached link-layer address
        lladdr = b"\x02\x01" + _mac(attacker_mac)  # target link-layer address option
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as node:
            node.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, env.bridge.encode())
            node.settimeout(10)
            _send_raw(
                env,
                attacker_id,
                # "The victim's address is at my MAC", from its own link-local and the victim's.
                _icmp6(
                    attacker_mac,
                    "33:33:00:00:00:01",
                    own_ll,
                    "ff02::1",
                    136,
                    override + socket.inet_pton(socket.AF_INET6, victim_v6) + lladdr,
                ),
                _icmp6(
                    attacker_mac,
                    "33:33:00:00:00:01",
                    victim_v6,
                    "ff02::1",
                    136,
                    override + socket.inet_pton(socket.AF_INET6, victim_v6) + lladdr,
                ),
                # A router advertisement (hop limit 64, lifetime 1800 s) from its link-local.
                _icmp6(
                    attacker_mac,
                    "33:33:00:00:00:01",
                    own_ll,
                    "ff02::1",
                    134,
                    struct.pack("!BBHII", 64, 0, 1800, 0, 0) + b"\x01\x01" + _mac(attacker_mac),
                ),
                # The marker: an echo request from its own address.
                _icmp6(attacker_mac, bridge_mac, attacker_v6, gateway_v6, 128, b"\0\1\0\1mark"),
            )
            seen: list[tuple[int, str, str]] = []  # type, source, NA target
            while not [entry for entry in seen if entry[:2] == (128, attacker_v6)]:
                data, source = node.recvfrom(2048)
                sender = source[0].split("%")[0]
                if sender in (own_ll, attacker_v6, victim_v6):
                    target = socket.inet_ntop(socket.AF_INET6, data[8:24]) if data[0] == 136 else ""
                    seen.append((data[0], sender, target))
        # No advertisement of the victim's address and no router advertisement got through.
        assert [entry for entry in seen if entry[0] == 134 or entry[2] == victim_v6] == []
        assert _neighbour(env, victim_v6) == victim_mac
        assert _http_get(victim_v6, HTTP_PORT) == "victim"
        for sandbox_id in (attacker_id, victim_id):
            env.remove(sandbox_id)
        assert env.leftovers() == []
    finally:
        env.write_conf(env.conflist())
