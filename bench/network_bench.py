"""Benchmark (not a test): runc pod start with and without CNI, in the same run.

"Without": the runc backend's own loopback-only netns (podinit unshares it).
"With": what the pod service does: the network layer makes and pins the netns,
runs CNI ADD (bridge + host-local + portmap + loopback from /usr/lib/cni on a
private bridge of its own), then the backend joins it. Runs alternate; each
pod is torn down (DEL, unpin) before the next. Needs root, runc, the plugins.

    .venv/bin/python bench/network_bench.py [--runs 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from vmcri.config import NetworkConfig
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.model import Metadata, PodConfig
from vmcri.network.service import PodNetworking
from vmcri.store.records import SandboxRecord


def conflist(bridge: str, subnet: str, ipam_dir: Path) -> str:
    ipam = {
        "type": "host-local",
        "dataDir": str(ipam_dir),
        "ranges": [[{"subnet": f"{subnet}.0/24"}]],
    }
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "bench",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": True, "ipam": ipam},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    bridge = f"vmcrib{random.randint(0, 0xFFFFF):05x}"
    with tempfile.TemporaryDirectory(prefix="vmcri-netbench-") as tmp:
        top = Path(tmp)
        (top / "net.d").mkdir()
        subnet = f"10.{random.randint(150, 250)}.{random.randint(0, 255)}"
        (top / "net.d" / "10-bench.conflist").write_text(conflist(bridge, subnet, top / "ipam"))
        backend = RuncBackend(RuncOptions(), Layout(top / "state", top / "root"), RealHost())
        net = PodNetworking(
            NetworkConfig(cni_conf_dir=str(top / "net.d"), cni_bin_dirs=("/usr/lib/cni",)),
            top / "state",
            lambda: "",
        )
        plain: list[float] = []
        cni: list[float] = []
        try:
            for _ in range(args.runs):
                for with_cni in (False, True):
                    sb = SandboxRecord(
                        id=uuid.uuid4().hex,
                        handler="runc",
                        backend="runc",
                        config=PodConfig(metadata=Metadata(name="b", uid="u"), hostname="b"),
                    )
                    t0 = time.perf_counter()
                    if with_cni:
                        planned = net.plan(sb, net.create_netns(sb.id))
                        sb = dataclasses.replace(sb, network=planned)
                        sb = dataclasses.replace(sb, network=net.add(sb, planned))
                    backend.run_sandbox(sb)
                    (cni if with_cni else plain).append(time.perf_counter() - t0)
                    backend.stop_sandbox(sb)
                    backend.remove_sandbox(sb)
                    if with_cni:
                        net.release(sb)
                        net.remove_netns(sb.id)
        finally:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    p, c = statistics.median(plain), statistics.median(cni)
    print(f"runc pod start, median of {args.runs}: loopback only {p * 1000:.1f} ms, "
          f"with CNI {c * 1000:.1f} ms, ratio {c / p:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
