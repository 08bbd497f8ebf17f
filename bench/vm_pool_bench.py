"""Pods from the warm pool against pods restored from a VM template, in the same run.

One daemon with two ``vm`` handlers on the same guest image: ``vm`` restores each pod from
its template (no pool), ``vmpool`` takes each pod from its pool (``pool_size``). Runs
alternate; before each measured pod the host is quiet (the pool full, its refill done),
so a pooled pod's figures are those of a pool that kept up. Per mode: RunPodSandbox until
it returns (Ready), and until a first container runs (Create + Start); medians and p90.
The daemon's "VM up" lines give the pooled pods' own steps (resume, SetupSandbox).

    .venv/bin/python bench/vm_pool_bench.py --runs 10
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.vm_bench import (  # noqa: E402
    GUEST,
    pod_config,
    remove,
    run_pod,
    started_as,
    summary,
    wait_template,
)
from tests.integration.daemon.conftest import start_daemon, stop_daemon  # noqa: E402
from tests.support.push import push_busybox_image  # noqa: E402
from tests.support.registry import LocalRegistry  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402
from vmcri.handlers.vm.pool_vms import pool_vms_on_disk  # noqa: E402
from vmcri.host.mounts import HostMounter  # noqa: E402

CONFIG = """\
[network]
enabled = false
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
guest_dir = {guest_dir}
writable_layer_mib = 256
[runtimes.vmpool]
backend = "vm"
[runtimes.vmpool.options]
guest_dir = {guest_dir}
writable_layer_mib = 256
pool_size = {pool_size}
"""
MODES = {"restored": "vm", "pooled": "vmpool"}
POOLED_MARKS = ("resume_s", "setup_s", "sandbox_ready_s")


def pool_full(tmp: Path, size: int) -> bool:
    ids = [vm.sandbox_id for vm in pool_vms_on_disk(tmp / "root/backends/vmpool") if vm.idle]
    if len(ids) < size:
        return False
    states = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--state-paused", "--name"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return all(f"vmcri-{i}" in states for i in ids)


def wait_pool(tmp: Path, size: int, timeout_s: float = 600) -> float:
    started = time.monotonic()
    while not pool_full(tmp, size):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError("the pool did not fill")
        time.sleep(0.2)
    return time.monotonic() - started


def pooled_steps(log: Path, sandbox_id: str) -> dict[str, float]:
    pattern = re.compile(re.escape(f"sandbox {sandbox_id}: VM up (taken from the pool)"))
    for line in reversed(log.read_text().splitlines()):
        if pattern.search(line):
            record = json.loads(line)
            return {k: float(record[k]) for k in POOLED_MARKS if k in record}
    return {}


def restored_once(runtime: Any, tmp: Path, handler: str, mode: str, timeout_s: float = 600) -> None:
    """Pods of ``handler`` until one starts as ``mode`` (its own template is built then)."""
    deadline = time.monotonic() + timeout_s
    for n in itertools.count():
        sandbox_id, _ = run_pod(runtime, tmp, f"warm-{handler}-{n}", handler)
        start = started_as(runtime, sandbox_id)
        remove(runtime, [sandbox_id])
        if start == mode:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"handler {handler}: no {mode} pod")
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--log", type=Path, help="keep the daemon's log here")
    args = parser.parse_args()
    ready: dict[str, list[float]] = {mode: [] for mode in MODES}
    running: dict[str, list[float]] = {mode: [] for mode in MODES}
    steps: dict[str, list[float]] = {mark: [] for mark in POOLED_MARKS}
    refill: list[float] = []
    create_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    start_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vmcri-pool-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalRegistry(tmp / "registry") as registry:
            push_busybox_image(registry.host, "bench/busybox:1")
            image = f"{registry.host}/bench/busybox:1"
            config = tmp / "vmcri.toml"
            config.write_text(
                CONFIG.format(guest_dir=json.dumps(str(GUEST)), pool_size=args.pool_size)
            )
            daemon = start_daemon(tmp, config=config, log_level="info", templates=None)
            try:
                runtime: Any = daemon.runtime()
                wait_template(runtime)
                for mode, handler in MODES.items():
                    restored_once(runtime, tmp, handler, mode)
                daemon.images().PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300
                )
                print(f"pool full {wait_pool(tmp, args.pool_size):.1f}s later", flush=True)
                for run in range(args.runs):
                    line = [f"run {run + 1}/{args.runs}"]
                    for mode, handler in MODES.items():
                        refill.append(wait_pool(tmp, args.pool_size))
                        name = f"{mode}-{run}"
                        sandbox_id, took = run_pod(runtime, tmp, name, handler)
                        made.append(sandbox_id)
                        assert started_as(runtime, sandbox_id) == mode, (mode, sandbox_id)
                        ready[mode].append(took)
                        started = time.monotonic() - took
                        container = pb.ContainerConfig(
                            metadata=pb.ContainerMetadata(name="c"),
                            image=pb.ImageSpec(image=image),
                            command=["sleep", "1000"],
                        )
                        asked = time.monotonic()
                        container_id = runtime.CreateContainer(
                            pb.CreateContainerRequest(
                                pod_sandbox_id=sandbox_id,
                                config=container,
                                sandbox_config=pod_config(tmp, name),
                            ),
                            timeout=300,
                        ).container_id
                        created = time.monotonic()
                        runtime.StartContainer(
                            pb.StartContainerRequest(container_id=container_id), timeout=300
                        )
                        running[mode].append(time.monotonic() - started)
                        create_s[mode].append(created - asked)
                        start_s[mode].append(time.monotonic() - created)
                        if mode == "pooled":
                            for mark, value in pooled_steps(daemon.log, sandbox_id).items():
                                steps[mark].append(value)
                        remove(runtime, [sandbox_id])
                        made.remove(sandbox_id)
                        line.append(
                            f"{mode} ready {ready[mode][-1]:.3f}s running {running[mode][-1]:.3f}s"
                        )
                    print("; ".join(line), flush=True)
            finally:
                for sandbox_id in made:  # a failed run removes what it made
                    with contextlib.suppress(grpc.RpcError):
                        remove(runtime, [sandbox_id])
                stop_daemon(daemon)
                HostMounter().unmount_below(tmp)
                if args.log:
                    shutil.copy(daemon.log, args.log)
    for mode in MODES:
        r, c = summary(ready[mode]), summary(running[mode])
        print(
            f"{mode:9} Ready median {r['median']:.3f}s p90 {r['p90']:.3f}s; "
            f"first container running median {c['median']:.3f}s p90 {c['p90']:.3f}s"
        )
    for mode in MODES:
        c, t = summary(create_s[mode]), summary(start_s[mode])
        print(
            f"{mode:9} CreateContainer median {c['median']:.3f}s p90 {c['p90']:.3f}s; "
            f"StartContainer median {t['median']:.3f}s p90 {t['p90']:.3f}s"
        )
    for mode in ("ready", "running"):
        table = ready if mode == "ready" else running
        ratio = summary(table["pooled"])["median"] / summary(table["restored"])["median"]
        print(f"pooled/restored {mode}: {ratio:.2f}x")
    for mark, values in steps.items():
        if values:
            s = summary(values)
            print(f"pooled {mark}: median {s['median']:.3f}s p90 {s['p90']:.3f}s")
    s = summary(refill)
    print(f"wait for a full pool before a pod: median {s['median']:.2f}s p90 {s['p90']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
