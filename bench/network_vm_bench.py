"""Benchmark (not a test): what CNI costs a pod's start, and TCP throughput into VM vs runc pods.

Two real daemons run side by side on their own sockets and state: one with a CNI
network (Debian's bridge + host-local + portmap + loopback plugins, on a private
bridge and subnet of its own), one with networking off (pods get loopback only).
Pod starts (RunPodSandbox through the CRI socket) alternate between them, for
both handlers, so both halves of every ratio see the same machine load. Then,
on the CNI daemon, one runc pod and one VM pod each run a busybox ``nc`` sink,
and the host sends them the same bytes: the ratio is VM over runc throughput.
Traffic stays between the host and its own pods. Needs root, runc, libvirtd,
the guest image, docker-registry and the CNI plugins (``scripts/setup.sh``).

    .venv/bin/python bench/network_vm_bench.py [--runc-runs 10] [--vm-runs 5] [--mib 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The registry helpers live in tests/support/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry, registries_conf_for
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.host.mounts import HostMounter

SINK_PORT = 9000
BOOT_TIMEOUT_S = 300


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    channel: grpc.Channel

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel)


def start_daemon(top: Path, config: str) -> Daemon:
    top.mkdir(parents=True)
    (top / "config.toml").write_text(config)
    sock = top / "vmcri.sock"
    args = [sys.executable, "-m", "vmcri", "serve", "--socket", str(sock)]
    args += ["--root", str(top / "root"), "--state", str(top / "state")]
    args += ["--config", str(top / "config.toml"), "--log-level", "warning"]
    with open(top / "daemon.log", "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log)
    channel = grpc.insecure_channel(f"unix://{sock}")
    grpc.channel_ready_future(channel).result(timeout=60)
    return Daemon(process, channel)


def conflist(bridge: str, subnet: str, ipam_dir: Path) -> str:
    ipam = {
        "type": "host-local",
        "dataDir": str(ipam_dir),
        "ranges": [[{"subnet": f"{subnet}.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    bridge_plugin = {"type": "bridge", "bridge": bridge, "isGateway": True, "ipam": ipam}
    plugins = [bridge_plugin, {"type": "portmap", "capabilities": {"portMappings": True}}]
    plugins.append({"type": "loopback"})
    return json.dumps({"cniVersion": "1.0.0", "name": "bench", "plugins": plugins})


def pod_config(top: Path, name: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
        hostname=name,
        log_directory=str(top / "logs" / name),
    )


def timed_start(daemon: Daemon, top: Path, handler: str, name: str) -> float:
    request = pb.RunPodSandboxRequest(config=pod_config(top, name), runtime_handler=handler)
    started = time.perf_counter()
    sandbox_id = daemon.runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
    elapsed = time.perf_counter() - started
    remove(daemon, sandbox_id)
    return elapsed


def remove(daemon: Daemon, sandbox_id: str) -> None:
    daemon.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    daemon.runtime.RemovePodSandbox(
        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
    )


@contextlib.contextmanager
def sink_pod(daemon: Daemon, top: Path, image: str, handler: str) -> Iterator[str]:
    """A pod whose container discards what reaches SINK_PORT; yields the pod IP."""
    config = pod_config(top, f"sink-{handler}")
    request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
    sandbox_id = daemon.runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
    try:
        script = f"while true; do nc -l -p {SINK_PORT} > /dev/null; done"
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="sink"),
            image=pb.ImageSpec(image=image),
            command=["sh", "-c", script],
            log_path="sink.log",
        )
        created = daemon.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
            ),
            timeout=120,
        )
        daemon.runtime.StartContainer(
            pb.StartContainerRequest(container_id=created.container_id), timeout=120
        )
        status = daemon.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=30
        )
        yield status.status.network.ip
    finally:
        remove(daemon, sandbox_id)


def send(ip: str, payload: bytes, deadline_s: float = 120.0) -> float:
    """Seconds to deliver ``payload`` to the sink: from connect to the sink's close."""
    end = time.monotonic() + deadline_s
    while True:  # the sink's listener may not be up yet, or between two connections
        try:
            conn = socket.create_connection((ip, SINK_PORT), timeout=5)
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    with conn:
        started = time.perf_counter()
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(deadline_s)
        while conn.recv(65536):
            pass
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runc-runs", type=int, default=10)
    parser.add_argument("--vm-runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32, help="bytes sent per transfer")
    parser.add_argument("--transfers", type=int, default=3)
    args = parser.parse_args()
    bridge = f"vmcrib{random.randint(0, 0xFFFFF):05x}"
    subnet = f"10.{random.randint(150, 250)}.{random.randint(0, 255)}"
    daemons: list[Daemon] = []
    with tempfile.TemporaryDirectory(prefix="vmcri-nb-", dir="/tmp") as tmp:
        top = Path(tmp)
        try:
            with LocalRegistry(top / "registry") as registry:
                push_busybox_image(registry.host, "bench/busybox:1")
                image = f"{registry.host}/bench/busybox:1"
                conf = registries_conf_for(top / "registries.conf", registry.host)
                (top / "net.d").mkdir()
                (top / "net.d" / "10-bench.conflist").write_text(
                    conflist(bridge, subnet, top / "ipam")
                )
                common = f'registries_conf = "{conf}"\n'
                with_cni = start_daemon(
                    top / "cni",
                    common + f'[network]\ncni_conf_dir = "{top / "net.d"}"\n'
                    'cni_bin_dirs = ["/usr/lib/cni"]\n',
                )
                daemons.append(with_cni)
                plain = start_daemon(top / "plain", common + "[network]\nenabled = false\n")
                daemons.append(plain)
                for daemon in daemons:
                    api_pb2_grpc.ImageServiceStub(daemon.channel).PullImage(
                        pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120
                    )
                report(top, with_cni, plain, image, args)
        finally:
            for daemon in daemons:
                daemon.process.terminate()
                daemon.process.wait(timeout=60)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
            HostMounter().unmount_below(top)  # the vm backend's own state mount, and the netns
    return 0


def report(
    top: Path, with_cni: Daemon, plain: Daemon, image: str, args: argparse.Namespace
) -> None:
    for handler, runs in (("runc", args.runc_runs), ("vm", args.vm_runs)):
        without: list[float] = []
        cni: list[float] = []
        for i in range(runs):
            without.append(timed_start(plain, top, handler, f"{handler}-plain-{i}"))
            cni.append(timed_start(with_cni, top, handler, f"{handler}-cni-{i}"))
        p, c = statistics.median(without), statistics.median(cni)
        print(
            f"{handler} pod start, median of {runs}: loopback only {p * 1000:.0f} ms, "
            f"with CNI {c * 1000:.0f} ms, ratio {c / p:.2f}",
            flush=True,
        )
    payload = random.randbytes(args.mib << 20)
    rates: dict[str, float] = {}
    for handler in ("runc", "vm"):
        with sink_pod(with_cni, top, image, handler) as ip:
            seconds = statistics.median(send(ip, payload) for _ in range(args.transfers))
        rates[handler] = len(payload) * 8 / seconds / 1e6
    print(
        f"host -> pod TCP, {args.mib} MiB, median of {args.transfers}: runc pod "
        f"{rates['runc']:.0f} Mbit/s, VM pod {rates['vm']:.0f} Mbit/s, "
        f"ratio VM/runc {rates['vm'] / rates['runc']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
