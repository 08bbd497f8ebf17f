#!/usr/bin/env python3
"""VM pod checkpoint and restore through the CRI, against ``virsh save``/``restore``.

A daemon of its own (VM templates on, pods without a pod network), then per round:

  idle   a pod with one sleeping container: CheckpointPod (RUNNING), the pod removed,
         RestorePod; the checkpoint's size on disk
  dirty  the same with a container holding ``--dirty-mib`` of random data in memory
         (a shell variable: nothing a zero page or a disk could stand for)
  fresh  RunPodSandbox and the first container running, for the restored pods' compare
  floor  ``virsh save --bypass-cache`` and ``virsh restore`` of a dirty pod's domain, the
         same QEMU, the same guest (it stops the domain: done last, then removed)

Prints medians and p90s of each and the ratios to the floor (same run: the machine is
noisy). Example: bench/pod_checkpoint_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.daemon.conftest import start_daemon, stop_daemon  # noqa: E402
from tests.support.push import push_busybox_image  # noqa: E402
from tests.support.registry import LocalRegistry  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402
from vmcri.handlers.vm.domain import domain_name  # noqa: E402
from vmcri.host.mounts import HostMounter  # noqa: E402

CONFIG = """\
[network]
enabled = false
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
guest_dir = {guest_dir}
default_memory_mib = {memory_mib}
"""


def _wait(what: str, predicate: Any, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _has_template(rt: Any) -> bool:
    status = rt.Status(pb.StatusRequest(), timeout=30).status
    return any(c.type == "VmTemplates" and c.status for c in status.conditions)


def _pod(tmp: Path, name: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"u-{name}", namespace="bench"),
        hostname=name,
        log_directory=str(tmp / "logs" / name),
    )


def _container(image: str, command: list[str]) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        image=pb.ImageSpec(image=image),
        command=command,
        log_path="c.log",
    )


def _command(dirty_mib: int) -> list[str]:
    if not dirty_mib:
        return ["sleep", "100000"]
    # base64 of 3/4 of it: ``dirty_mib`` of text in the shell's memory (its peak is twice
    # that while the string grows, hence the pods' larger RAM, --memory-mib).
    fill = f"x=$(busybox head -c {(dirty_mib << 20) * 3 // 4} /dev/urandom | busybox base64 -w 0)"
    return ["sh", "-c", f"{fill}; echo filled; busybox sleep 100000"]


def _start(rt: Any, tmp: Path, image: str, name: str, dirty_mib: int) -> tuple[str, float]:
    started = time.monotonic()
    config = _pod(tmp, name)
    sandbox_id = rt.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config, runtime_handler="vm"), timeout=600
    ).pod_sandbox_id
    container_id = rt.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            config=_container(image, _command(dirty_mib)),
            sandbox_config=config,
        ),
        timeout=300,
    ).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=300)
    took = time.monotonic() - started
    if dirty_mib:
        log = tmp / "logs" / name / "c.log"
        _wait("the container's memory", lambda: log.exists() and "filled" in log.read_text())
    return sandbox_id, took


def _remove(rt: Any, sandbox_id: str) -> None:
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300)


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / (1 << 20)


def round_trip(rt: Any, tmp: Path, image: str, name: str, dirty_mib: int) -> dict[str, float]:
    sandbox_id, _ = _start(rt, tmp, image, name, dirty_mib)
    target = tmp / "ckpt" / name
    target.mkdir(parents=True)
    started = time.monotonic()
    rt.CheckpointPod(
        pb.CheckpointPodRequest(pod_sandbox_id=sandbox_id, path=str(target)), timeout=600
    )
    checkpoint_s = time.monotonic() - started
    _remove(rt, sandbox_id)
    new = _pod(tmp, f"{name}-r")
    started = time.monotonic()
    restored = rt.RestorePod(
        pb.RestorePodRequest(
            path=str(target), config=new, container_configs=[_container(image, ["false"])]
        ),
        timeout=600,
    ).pod_sandbox_id
    restore_s = time.monotonic() - started
    size = _size_mib(target)
    _remove(rt, restored)
    subprocess.run(["rm", "-rf", str(target)], check=True)
    return {"checkpoint_s": checkpoint_s, "restore_s": restore_s, "size_mib": size}


def floor(rt: Any, tmp: Path, image: str, name: str, dirty_mib: int) -> dict[str, float]:
    sandbox_id, _ = _start(rt, tmp, image, name, dirty_mib)
    domain = domain_name(sandbox_id)
    state = tmp / f"{name}.save"
    # As vmcri's save does: all of the RAM in the stream, also what the template restore
    # left shared with its file (else the restore would need that file and the capability).
    off = '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[' \
        '{"capability":"x-ignore-shared","state":false}]}}'  # fmt: skip
    subprocess.run(["virsh", "-q", "qemu-monitor-command", domain, off], check=True)
    started = time.monotonic()
    subprocess.run(["virsh", "-q", "save", "--bypass-cache", domain, str(state)], check=True)
    save_s = time.monotonic() - started
    # A template clone's domain waits for its state itself (``-incoming defer`` among its
    # QEMU arguments), which virsh's restore would give QEMU a second time: drop it.
    xml = subprocess.run(
        ["virsh", "-q", "save-image-dumpxml", "--security-info", str(state)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    edited = tmp / f"{name}.xml"
    edited.write_text(
        xml.replace("<qemu:arg value='-incoming'/>", "").replace("<qemu:arg value='defer'/>", "")
    )
    started = time.monotonic()
    subprocess.run(
        ["virsh", "-q", "restore", "--bypass-cache", str(state), "--xml", str(edited)], check=True
    )
    restore_s = time.monotonic() - started
    size = state.stat().st_blocks * 512 / (1 << 20)
    state.unlink()
    _remove(rt, sandbox_id)
    return {"save_s": save_s, "restore_s": restore_s, "size_mib": size}


def _stats(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(values):.2f} p90 {p90:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dirty-mib", type=int, default=200)
    parser.add_argument("--memory-mib", type=int, default=896, help="the pods' guest RAM")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"idle": [], "dirty": [], "floor": []}
    fresh: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vmcri-ckpt-bench-", dir="/var/tmp") as name:
        tmp = Path(name)
        with LocalRegistry(tmp / "registry") as registry:
            push_busybox_image(registry.host, "bench/busybox:1")
            image = f"{registry.host}/bench/busybox:1"
            config = tmp / "vmcri.toml"
            guest = json.dumps(str(REPO / "guest/build"))
            config.write_text(CONFIG.format(guest_dir=guest, memory_mib=args.memory_mib))
            daemon = start_daemon(tmp, config=config, log_level="info", templates=None)
            rt = daemon.runtime()
            try:
                _wait("a VM template", lambda: _has_template(rt))
                daemon.images().PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300
                )
                for n in range(args.rounds):
                    sandbox_id, took = _start(rt, tmp, image, f"fresh-{n}", 0)
                    fresh.append(took)
                    _remove(rt, sandbox_id)
                    results["idle"].append(round_trip(rt, tmp, image, f"idle-{n}", 0))
                    dirty = round_trip(rt, tmp, image, f"dirty-{n}", args.dirty_mib)
                    results["dirty"].append(dirty)
                    results["floor"].append(floor(rt, tmp, image, f"floor-{n}", args.dirty_mib))
                    print(f"round {n + 1}: dirty {dirty} floor {results['floor'][-1]}", flush=True)
            finally:
                for pod in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60).items:
                    _remove(rt, pod.id)
                stop_daemon(daemon)
                HostMounter().unmount_below(tmp)
    print(f"fresh pod + first container running: {_stats(fresh)} s")
    for kind in ("idle", "dirty"):
        for key in ("checkpoint_s", "restore_s", "size_mib"):
            print(f"{kind:5} {key:12}: {_stats([r[key] for r in results[kind]])}")
    for key in ("save_s", "restore_s", "size_mib"):
        print(f"floor {key:12}: {_stats([r[key] for r in results['floor']])}")
    pairs = list(zip(results["dirty"], results["floor"], strict=True))
    save = statistics.median(d["checkpoint_s"] / f["save_s"] for d, f in pairs)
    load = statistics.median(d["restore_s"] / f["restore_s"] for d, f in pairs)
    print(f"dirty pod vs virsh (same round): checkpoint {save:.2f}x save, restore {load:.2f}x")
    if args.json:
        print(json.dumps({"fresh": fresh, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
