"""A real daemon with Debian's CNI plugins (bridge, host-local, portmap, loopback) and runc pods.

The network is the test's own: a bridge with a random name on a random
10.x.y.0/24, host-local allocations under the test's directory, no masquerade;
traffic only goes between the host and the test's pods.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon.conftest import RunningDaemon
from tests.integration.harness import daemon_with_busybox
from vmcri.api import api_pb2 as pb
from vmcri.api import api_pb2_grpc
from vmcri.network.antispoof import table_name

PLUGIN_DIR = Path("/usr/lib/cni")
HANDLER = "runc"
HTTP_PORT = 8080


@dataclass
class NetEnv:
    tmp: Path
    image: str
    daemon: RunningDaemon
    bridge: str
    subnet: str  # "10.x.y"
    sandboxes: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # every pod run, removed or not

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    @property
    def conf_dir(self) -> Path:
        return self.tmp / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.tmp / "ipam"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def conflist(
        self,
        *,
        extra: list[dict[str, Any]] | None = None,
        bridge_caps: dict[str, bool] | None = None,
        **ipam: str,
    ) -> str:
        return json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "vmcri-test",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": self.bridge,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        **({"capabilities": bridge_caps} if bridge_caps else {}),
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(self.ipam_dir),
                            # With the ipRanges capability the ranges come from the pod CIDR.
                            **(
                                {}
                                if bridge_caps and bridge_caps.get("ipRanges")
                                else {"ranges": [[{"subnet": f"{self.subnet}.0/24", **ipam}]]}
                            ),
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    *(extra or []),
                    {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                    {"type": "loopback"},
                ],
            }
        )

    def write_conf(self, text: str) -> None:
        for old in self.conf_dir.iterdir():
            old.unlink()
        (self.conf_dir / "10-test.conflist").write_text(text)

    def pod_config(
        self,
        name: str,
        ports: list[pb.PortMapping] | None = None,
        hostname: str = "",
        namespaces: pb.NamespaceOption | None = None,
    ) -> pb.PodSandboxConfig:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="net"),
            hostname=hostname or name[:63],
            log_directory=str(self.tmp / "logs" / name),
            port_mappings=ports or [],
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces)
            ),
        )

    def run_pod(self, config: pb.PodSandboxConfig, handler: str = HANDLER) -> str:
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        # A VM pod boots under software emulation on hosts without KVM: minutes, at worst.
        timeout = 60 if handler == HANDLER else 300
        sandbox_id = str(self.runtime.RunPodSandbox(request, timeout=timeout).pod_sandbox_id)
        self.sandboxes.append(sandbox_id)
        self.started.append(sandbox_id)
        return sandbox_id

    def start_server(self, sandbox_id: str, config: pb.PodSandboxConfig, text: str) -> str:
        """A busybox httpd on HTTP_PORT answering ``/id`` with ``text``."""
        script = f"mkdir -p /www && echo {text} > /www/id && exec httpd -f -p {HTTP_PORT} -h /www"
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="web"),
            image=pb.ImageSpec(image=self.image),
            command=["sh", "-c", script],
            log_path="web.log",
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
        )
        container_id = str(self.runtime.CreateContainer(request, timeout=60).container_id)
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=60)
        return container_id

    def exec(self, container_id: str, cmd: list[str]) -> pb.ExecSyncResponse:
        request = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=60)
        response: pb.ExecSyncResponse = self.runtime.ExecSync(request, timeout=90)
        return response

    def pod_status(self, sandbox_id: str) -> pb.PodSandboxStatus:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        response: pb.PodSandboxStatusResponse = self.runtime.PodSandboxStatus(request, timeout=30)
        return response.status

    def remove(self, sandbox_id: str) -> None:
        self.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120
        )
        self.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        self.sandboxes.remove(sandbox_id)

    def leftovers(self) -> list[str]:
        """Everything of a pod that should be gone once no pod of the suite runs."""
        found: list[str] = []
        netns_dir = self.daemon.state / "netns"
        if netns_dir.exists():
            found += [f"netns {p}" for p in netns_dir.iterdir()]
        links = subprocess.run(
            ["ip", "-o", "link", "show", "master", self.bridge],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if links:
            found.append(f"veth on {self.bridge}: {links}")
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        found += [f"iptables: {line}" for line in rules.splitlines() if self.subnet + "." in line]
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        # A pod's anti-spoofing table (vmcri/network/spoofguard.py) goes with its network.
        gone = {table_name(s) for s in self.started if s not in self.sandboxes}
        found += [f"nft: {t}" for t in tables.split() if t in gone]
        network_dir = self.ipam_dir / "vmcri-test"
        if network_dir.exists():
            found += [
                f"host-local lease {p.name}"
                for p in network_dir.iterdir()
                if p.name.startswith(self.subnet + ".")
            ]
        return found


def _free_subnet() -> str:
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(50):
        candidate = f"10.{random.randint(150, 250)}.{random.randint(0, 255)}"
        if candidate + "." not in used:
            return candidate
    raise AssertionError("no free 10.x.y.0/24 for the test network")


@pytest.fixture(scope="module")
def env() -> Iterator[NetEnv]:
    with net_env() as made:
        yield made


@contextmanager
def net_env() -> Iterator[NetEnv]:
    """A daemon on a bridge and subnet of its own; skips where root or a tool is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root (runc, namespaces, iptables)")
    for tool in ("runc", "iptables-save", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    missing = [
        p for p in ("bridge", "host-local", "portmap", "loopback") if not (PLUGIN_DIR / p).exists()
    ]
    if missing:
        pytest.skip(f"containernetworking-plugins missing in {PLUGIN_DIR}: {missing}")
    # The state dir must be passable by a user-namespaced pod's root (pytest's tmp is 0700).
    tmp = Path(tempfile.mkdtemp(prefix="vmcri-net-", dir="/tmp"))
    tmp.chmod(0o711)
    bridge = f"vmcri{random.randint(0, 0xFFFFFF):06x}"
    subnet = _free_subnet()
    (tmp / "net.d").mkdir()
    (tmp / "bin").mkdir()
    extra = (
        "[network]\n"
        f'cni_conf_dir = "{tmp / "net.d"}"\n'
        f'cni_bin_dirs = ["{tmp / "bin"}", "{PLUGIN_DIR}"]\n'
        "plugin_timeout_s = 3\n"
    )
    made: list[NetEnv] = []

    def make(t: Path, _registry: object, image: str, daemon: RunningDaemon) -> NetEnv:
        net_env = NetEnv(t, image, daemon, bridge, subnet)
        net_env.write_conf(net_env.conflist())
        made.append(net_env)
        return net_env

    try:
        with daemon_with_busybox(tmp, make, extra) as net_env:
            yield net_env
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
