"""In-pod file system speed: a container's rootfs on each handler, against the guest's tmpfs
and the 9p share, in one run.

One image is built and pushed to a local registry: busybox plus a tree of real files (the
host's ``/usr/lib/python3*``, cut to ``--files`` files and ``--mib`` MiB) at ``/tree``. The
same tree, as the host unpacked it, is also given to each pod as a hostPath volume at
``/vol``. Then, in a runc pod and in a VM pod on one daemon, the same shell runs:

* ``find`` over the tree (a metadata walk: a stat of every entry);
* ``tar`` of the tree to ``/dev/null`` through ``wc`` (every byte read);
* writing 2,000 small files (create, write, close).

on these file systems of the container:

=============  ============================================================================
rootfs         the image's /tree in the container's root: in a VM pod, an overlay the guest
               stacks over the layers' read-only erofs disks (vmcri/images/layer_erofs.py),
               its upper dir on the pod's writable disk; in a runc pod, the host's overlay
share          /vol in a VM pod: the pod's 9p share, as every rootfs was before layer disks
               (mounted ``sync,dirsync``, no cache); the old rootfs path, measured, and the
               old emptyDir path (every kubelet volume was a host directory on the share)
emptydir       /empty, a kubelet-shaped emptyDir (``<tmp>/kubelet/pods/<uid>/volumes/
               kubernetes.io~empty-dir/scratch``), a copy of /tree made first: in a VM pod
               now a directory on the pod's writable disk in the guest (guest_volumes.py)
tmpfs          /dev/shm, a copy of /tree made first: the guest's own memory, what the
               emulated CPU alone costs
=============  ============================================================================

Each operation runs ``--repeat`` times (the first with cold caches); the median is shown,
and the ratios to tmpfs in the same pod. Timing is the guest's own ``/proc/uptime`` (10 ms
steps), read around the operation inside the container, so the agent's round trips do not
count. Run as root after scripts/setup.sh:

    .venv/bin/python bench/file_bench.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.daemon.conftest import start_daemon, stop_daemon  # noqa: E402
from tests.support.layers import Layer, busybox_layer  # noqa: E402
from tests.support.push import push_image  # noqa: E402
from tests.support.registry import LocalRegistry  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402
from vmcri.host.mounts import HostMounter  # noqa: E402

GUEST = REPO / "guest/build"
CONFIG = """\
[network]
enabled = false
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
guest_dir = {guest_dir}
writable_layer_mib = 1024
[runtimes.runc]
backend = "runc"
"""
HANDLERS = ("runc", "vm")
# Each prints the milliseconds it took, from the container's /proc/uptime.
CLOCK = "read t0 _ < /proc/uptime; {op} >/dev/null 2>&1; read t1 _ < /proc/uptime; " \
    "echo $(( (${{t1%.*}}${{t1#*.}} - ${{t0%.*}}${{t0#*.}}) * 10 ))"  # fmt: skip
OPERATIONS = {
    "find": "find {dir} | wc -l",
    "tar": "busybox tar cf - {dir} | wc -c",
    "write 2000": (
        "rm -rf {scratch}; mkdir {scratch}; i=0; "
        "while [ $i -lt 2000 ]; do echo $i > {scratch}/f$i; i=$((i+1)); done"
    ),
}
PLACES = {  # where the tree is, where files are written
    "rootfs": ("/tree", "/written"),
    "share": ("/vol", "/vol/written"),
    "tmpfs": ("/dev/shm/tree", "/dev/shm/written"),
    "emptydir": ("/empty/tree", "/empty/written"),
}


def source_tree(files: int, mib: int) -> list[Path]:
    """Real files: the host's Python library, in a stable order, up to the limits."""
    roots = sorted(Path("/usr/lib").glob("python3*"))
    chosen: list[Path] = []
    total = 0
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            size = path.stat().st_size
            if len(chosen) >= files or total + size > mib << 20:
                return chosen
            chosen.append(path)
            total += size
    return chosen


def tree_layer(paths: list[Path], volume: Path) -> Layer:
    """The tree as a layer below /tree, and the same files below ``volume`` on the host."""
    layer = Layer("gzip")
    layer.dir("tree")
    made: set[str] = set()
    for path in paths:
        relative = path.relative_to("/usr/lib")
        parts = relative.parts
        for n in range(1, len(parts)):
            directory = "/".join(parts[:n])
            if directory not in made:
                layer.dir(f"tree/{directory}")
                (volume / directory).mkdir(parents=True, exist_ok=True)
                made.add(directory)
        data = path.read_bytes()
        layer.file(f"tree/{relative}", data)
        (volume / relative).write_bytes(data)
    return layer


def exec_ms(runtime: Any, container_id: str, script: str) -> int:
    result = runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=600),
        timeout=660,
    )
    if result.exit_code != 0:
        raise RuntimeError(f"{script}: exit {result.exit_code}: {result.stderr[-300:]!r}")
    return int(result.stdout.split()[-1])


def measure(runtime: Any, container_id: str, handler: str, repeat: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for copy in ("cp -a /tree /dev/shm/tree", "cp -a /tree /empty/tree"):
        exec_ms(runtime, container_id, CLOCK.format(op=copy))
    for place, (tree, scratch) in PLACES.items():
        place_name = place  # in a runc pod, "share" is the same volume, bound on the host
        for name, op in OPERATIONS.items():
            script = CLOCK.format(op=op.format(dir=tree, scratch=scratch))
            runs = [exec_ms(runtime, container_id, script) for _ in range(repeat)]
            found[f"{name} / {place_name}"] = {"first": runs[0], "median": statistics.median(runs)}
            print(f"  {handler:5} {place_name:14} {name:11} {runs} ms", flush=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1800, help="files in the tree")
    parser.add_argument("--mib", type=int, default=24, help="bytes in the tree, at most")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--guest-dir", type=Path, default=GUEST)
    parser.add_argument("--json", action="store_true", help="also print the raw numbers")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vmcri-file-bench-") as tmp_name:
        tmp = Path(tmp_name)
        volume = tmp / "volume"
        volume.mkdir()
        paths = source_tree(args.files, args.mib)
        size = sum(p.stat().st_size for p in paths)
        print(f"tree: {len(paths)} files, {size / (1 << 20):.1f} MiB", flush=True)
        layer = tree_layer(paths, volume)
        with LocalRegistry(tmp / "registry") as registry:
            config_obj = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}
            push_image(registry.host, "bench/tree:1", [busybox_layer(), layer], config=config_obj)
            image = f"{registry.host}/bench/tree:1"
            config = tmp / "vmcri.toml"
            config.write_text(CONFIG.format(guest_dir=json.dumps(str(args.guest_dir.resolve()))))
            daemon = start_daemon(tmp, config=config, log_level="info")
            try:
                runtime = daemon.runtime()
                daemon.images().PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=600
                )
                for handler in HANDLERS:
                    results[handler] = run_one(runtime, tmp, image, volume, handler, args.repeat)
            finally:
                stop_daemon(daemon)
                HostMounter().unmount_below(tmp)  # the daemon's private state mount
        print_table(results)
        if args.json:
            print(json.dumps(results, indent=1))
    return 0


def run_one(
    runtime: Any, tmp: Path, image: str, volume: Path, handler: str, repeat: int
) -> dict[str, Any]:
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=handler, uid=f"u-{handler}", namespace="bench"),
        hostname=handler,
        log_directory=str(tmp / "logs" / handler),
    )
    sandbox_id = runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pod, runtime_handler=handler), timeout=600
    ).pod_sandbox_id
    try:
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"),
            image=pb.ImageSpec(image=image),
            command=["sleep", "100000"],
            mounts=[
                pb.Mount(container_path="/vol", host_path=str(volume)),
                pb.Mount(container_path="/empty", host_path=str(empty_dir(tmp, handler))),
            ],
        )
        container_id = runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=container, sandbox_config=pod
            ),
            timeout=600,
        ).container_id
        runtime.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=300)
        print(f"{handler} pod:", flush=True)
        return measure(runtime, container_id, handler, repeat)
    finally:
        runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300)
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300)


def empty_dir(tmp: Path, handler: str) -> Path:
    """An emptyDir where kubelet makes one: the VM handler keeps it in the guest."""
    path = tmp / "kubelet/pods" / f"u-{handler}" / "volumes/kubernetes.io~empty-dir/scratch"
    path.mkdir(parents=True, mode=0o777)
    return path


def print_table(results: dict[str, Any]) -> None:
    vm, runc = results.get("vm", {}), results.get("runc", {})
    print("\n| in the container | runc pod, rootfs | VM pod, rootfs (layer disks) | "
          "VM pod, 9p share | VM pod, emptyDir (guest disk) | VM pod, tmpfs | rootfs / tmpfs "
          "| share / tmpfs | emptyDir / tmpfs | share / emptyDir |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in OPERATIONS:

        def ms(found: dict[str, Any], place: str, name: str = name) -> float:
            return float(found.get(f"{name} / {place}", {}).get("median", 0))

        tmpfs = ms(vm, "tmpfs") or 1
        empty = ms(vm, "emptydir")
        print(
            f"| {name} | {ms(runc, 'rootfs'):.0f} ms | {ms(vm, 'rootfs'):.0f} ms | "
            f"{ms(vm, 'share'):.0f} ms | {empty:.0f} ms | {ms(vm, 'tmpfs'):.0f} ms | "
            f"{ms(vm, 'rootfs') / tmpfs:.2f}x | {ms(vm, 'share') / tmpfs:.1f}x | "
            f"{empty / tmpfs:.2f}x | {ms(vm, 'share') / (empty or 1):.1f}x |"
        )


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
