"""Benchmark (not a test): pod + container start and stop/remove with the runc backend,
next to plain ``runc run`` of the same busybox rootfs. Needs root, runc, busybox-static.

    .venv/bin/python bench/runc_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.integration.runc.runc_itest_helpers import (
    RECORDS,
    container_record,
    new_id,
    sandbox_record,
)
from vmcri.handlers.runc.backend import RuncBackend
from vmcri.handlers.runc.host import RealHost
from vmcri.handlers.runc.layout import Layout
from vmcri.handlers.runc.options import RuncOptions
from vmcri.host.cgroups import remove_tree
from vmcri.model import ImageInfo, Metadata, PodConfig

CMD = ["sleep", "1000"]
CGROUP_PARENT = "/vmcri-bench"


def make_layer(top: Path) -> Path:
    layer = top / "layer"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (layer / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", layer / "bin" / "busybox")
    subprocess.run(["chroot", str(layer), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (layer / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    return layer


def bench_backend(top: Path, layer: Path, runs: int) -> tuple[list[float], list[float]]:
    backend = RuncBackend(
        RuncOptions(cgroup_parent=CGROUP_PARENT),
        Layout(top / "state", top / "root"),
        RealHost(),
        RECORDS,  # the backend's view of the records: the bench's own, as the tests' are
    )
    image = ImageInfo("sha256:" + "0" * 64, "bench", (str(layer),), {"Cmd": CMD})
    start, stop = [], []
    for _ in range(runs):
        sb = sandbox_record(PodConfig(metadata=Metadata(name="b", uid=new_id()), hostname="b"))
        c = container_record(sb, top, command=tuple(CMD))
        t0 = time.perf_counter()
        backend.run_sandbox(sb)
        backend.create_container(sb, c, image)
        backend.supervisor.start(sb, c)
        start.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        backend.stop_sandbox(sb)
        backend.remove_container(sb, c)
        backend.remove_sandbox(sb)
        stop.append(time.perf_counter() - t0)
    return start, stop


def bench_plain(top: Path, layer: Path, runs: int) -> tuple[list[float], list[float]]:
    bundle = top / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(layer), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = CMD
    (bundle / "config.json").write_text(json.dumps(spec))
    root = str(top / "plain-runc")
    start, stop = [], []
    for _ in range(runs):
        cid = uuid.uuid4().hex
        t0 = time.perf_counter()
        subprocess.run(["runc", "--root", root, "run", "--detach", "--bundle", str(bundle), cid],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        start.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["runc", "--root", root, "kill", cid, "KILL"], check=True)
        while _status(root, cid) != "stopped":
            time.sleep(0.005)
        subprocess.run(["runc", "--root", root, "delete", cid], check=True)
        stop.append(time.perf_counter() - t0)
    return start, stop


def _status(root: str, cid: str) -> str:
    out = subprocess.run(["runc", "--root", root, "state", cid], capture_output=True, check=True)
    return str(json.loads(out.stdout)["status"])


def stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.9 + 0.5) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runc-bench-") as tmp:
        top = Path(tmp)
        layer = make_layer(top)
        try:
            b_start, b_stop = bench_backend(top, layer, args.runs)
            p_start, p_stop = bench_plain(top, layer, args.runs)
        finally:
            remove_tree(CGROUP_PARENT)
    print(f"runs: {args.runs}")
    print(f"{'':28}{'median ms':>10}{'p90 ms':>10}")
    rows = [
        ("vmcri pod+container start", b_start), ("plain runc run --detach", p_start),
        ("vmcri stop+remove", b_stop), ("plain runc kill+delete", p_stop),
    ]  # fmt: skip
    for name, values in rows:
        med, p90 = stats(values)
        print(f"{name:28}{med * 1000:10.1f}{p90 * 1000:10.1f}")
    for what, ours, plain in (("start", b_start, p_start), ("stop/remove", b_stop, p_stop)):
        (om, op), (pm, pp) = stats(ours), stats(plain)
        print(f"ratio {what}: median x{om / pm:.2f}, p90 x{op / pp:.2f}")


if __name__ == "__main__":
    main()
