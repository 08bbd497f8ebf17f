"""VM pod start latency and host memory overhead, against the bare boot floor.

In one run, on the same kernel and initrd:

* floor: plain ``qemu-system-x86_64`` boots the guest kernel to ``/init``
  (``vmcri.mode=floor`` prints a marker and powers off); wall time from spawn
  to the marker;
* vmcri: RunPodSandbox until it returns (the sandbox is Ready), and until a
  first container runs (Create + Start), through a real daemon;
* host memory per pod: PSS of QEMU and of every host helper of the pod
  (virtiofsd where used), read from /proc/<pid>/smaps_rollup;
* inside the guest, from the pod's console log: the uptime at which /init
  exec'd the agent, and how long the agent then took to listen on its channel
  (it logs that); from the daemon's
  "VM up" log line: when the agent first answered, and how long it had been
  listening by then.

Ratios to the floor are printed: these machines are noisy, so only ratios of
the same run mean much. Run as root after scripts/setup.sh:

    .venv/bin/python bench/vm_bench.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.daemon.conftest import start_daemon, stop_daemon  # noqa: E402
from tests.support.push import push_busybox_image  # noqa: E402
from tests.support.registry import LocalRegistry  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402
from vmcri.handlers.vm.accel import choose_accel, kvm_usable  # noqa: E402
from vmcri.handlers.vm.domain import domain_name  # noqa: E402
from vmcri.handlers.vm.guest_image import load_guest_image  # noqa: E402

GUEST = REPO / "guest/build"
FLOOR_MARKER = re.compile(rb"vmcri-init: reached /init at")
GUEST_MARKERS = {
    "exec_at": re.compile(r"vmcri-init: exec agent at ([0-9.]+)"),
    "listening": re.compile(r"vmcri-agent INFO listening on .*?([0-9.]+)s after /init"),
}
HOST_MARKS = ("agent_ready_s", "agent_uptime_s")
VM_CONFIG = """\
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
guest_dir = {guest_dir}
"""


def boot_floor(accel: str, kernel: Path, initrd: Path, memory_mib: int) -> float:
    """Seconds from spawning QEMU to the guest's /init marker on the serial console."""
    argv = [
        "qemu-system-x86_64", "-M", "q35", "-accel", accel, "-m", str(memory_mib),
        "-nographic", "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "stdio",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 quiet vmcri.mode=floor",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    seen = b""
    try:
        while True:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"QEMU ended before /init: {seen[-500:]!r}")
            seen += chunk
            if FLOOR_MARKER.search(seen):
                return time.monotonic() - started
    finally:
        process.kill()
        process.wait()


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pod_processes(sandbox_id: str, share: Path) -> dict[str, int]:
    """QEMU of the pod, and any host helper whose command line names its share."""
    name = domain_name(sandbox_id)
    found: dict[str, int] = {}
    with open(f"/run/libvirt/qemu/{name}.pid") as f:
        found["qemu"] = int(f.read().strip())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == found["qemu"]:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(share).encode() in cmdline or name.encode() in cmdline:
            program = os.path.basename(cmdline.split(b"\0")[0].decode(errors="replace"))
            found[f"{program}[{entry.name}]"] = int(entry.name)
    return found


def guest_timings(console_log: Path) -> dict[str, float]:
    """The guest's own start-up marks from its console log (seconds; absent when missing)."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return {}
    found: dict[str, float] = {}
    for name, pattern in GUEST_MARKERS.items():
        match = pattern.search(text)
        if match:
            found[name] = float(match.group(1))
    return found


def vm_up_timings(daemon_log: Path, sandbox_id: str) -> dict[str, float]:
    """``agent_ready_s`` (domain start to first Ping answer) and ``agent_uptime_s`` (the
    agent's uptime in that answer) from the daemon's ``VM up`` line for the sandbox."""
    wanted = f"sandbox {sandbox_id}: VM up"
    for line in daemon_log.read_text(errors="replace").splitlines():
        if wanted in line:
            entry = json.loads(line)
            return {key: float(entry[key]) for key in HOST_MARKS if key in entry}
    return {}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="also print the raw numbers")
    parser.add_argument(
        "--guest-dir",
        type=Path,
        default=GUEST,
        help="guest image to boot (default guest/build): compare two builds in turn",
    )
    args = parser.parse_args()
    guest_dir: Path = args.guest_dir.resolve()
    choice = choose_accel("auto", kvm_usable())
    accel = "tcg" if choice.degraded else "kvm"
    # The floor boots the very kernel the vm handler picks for this host.
    kernel = load_guest_image(guest_dir, uncompressed_kernel=choice.degraded).kernel

    floor, ready, running, memory = [], [], [], []
    stages: dict[str, list[float]] = {name: [] for name in (*GUEST_MARKERS, *HOST_MARKS)}
    with tempfile.TemporaryDirectory(prefix="vmcri-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalRegistry(tmp / "registry") as registry:
            push_busybox_image(registry.host, "bench/busybox:1")
            image = f"{registry.host}/bench/busybox:1"
            config = tmp / "vmcri.toml"
            config.write_text(VM_CONFIG.format(guest_dir=json.dumps(str(guest_dir))))
            # log level info: debug would slow the guest's boot
            daemon = start_daemon(tmp, config=config, log_level="info")
            try:
                runtime = daemon.runtime()
                daemon.images().PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300
                )
                for run in range(args.runs):
                    floor.append(boot_floor(accel, kernel, guest_dir / "initrd.img", 256))
                    pod = pb.PodSandboxConfig(
                        metadata=pb.PodSandboxMetadata(name=f"bench-{run}", uid=f"u{run}"),
                        log_directory=str(tmp / "logs"),
                    )
                    started = time.monotonic()
                    sandbox_id = runtime.RunPodSandbox(
                        pb.RunPodSandboxRequest(config=pod, runtime_handler="vm"), timeout=600
                    ).pod_sandbox_id
                    ready.append(time.monotonic() - started)
                    container = pb.ContainerConfig(
                        metadata=pb.ContainerMetadata(name="c"),
                        image=pb.ImageSpec(image=image),
                        command=["sleep", "1000"],
                    )
                    container_id = runtime.CreateContainer(
                        pb.CreateContainerRequest(
                            pod_sandbox_id=sandbox_id, config=container, sandbox_config=pod
                        ),
                        timeout=300,
                    ).container_id
                    runtime.StartContainer(
                        pb.StartContainerRequest(container_id=container_id), timeout=300
                    )
                    running.append(time.monotonic() - started)
                    time.sleep(2)  # let the guest settle before reading memory
                    pod_dir = tmp / "state/backends/vm" / sandbox_id
                    processes = pod_processes(sandbox_id, pod_dir / "share")
                    memory.append(sum(pss_kib(pid) for pid in processes.values()) / 1024)
                    marks = guest_timings(pod_dir / "console.log")
                    marks.update(vm_up_timings(daemon.log, sandbox_id))
                    for name, value in marks.items():
                        stages[name].append(value)
                    runtime.RemovePodSandbox(
                        pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300
                    )
                    print(
                        f"run {run + 1}/{args.runs}: floor {floor[-1]:.2f}s, ready "
                        f"{ready[-1]:.2f}s, running {running[-1]:.2f}s, host memory "
                        f"{memory[-1]:.1f} MiB ({', '.join(processes)}); marks: "
                        + ", ".join(f"{name} {value:.2f}s" for name, value in marks.items()),
                        flush=True,
                    )
            finally:
                stop_daemon(daemon)
                subprocess.run(["umount", "-R", "-l", str(tmp / "state/backends/vm")],
                               capture_output=True)  # fmt: skip

    f, r, c, m = summary(floor), summary(ready), summary(running), summary(memory)
    print(f"\naccel {accel}, kernel {kernel.name}, {args.runs} runs, medians (p90):")
    print(f"  bare floor (QEMU to /init)      {f['median']:6.2f}s ({f['p90']:.2f}s)")
    print(f"  RunPodSandbox -> Ready          {r['median']:6.2f}s ({r['p90']:.2f}s)"
          f"   {r['median'] / f['median']:.2f}x floor")  # fmt: skip
    print(f"  -> first container running     {c['median']:6.2f}s ({c['p90']:.2f}s)"
          f"   {c['median'] / f['median']:.2f}x floor")  # fmt: skip
    print(f"  host memory per pod (PSS)       {m['median']:6.1f} MiB ({m['p90']:.1f} MiB)")
    labels = {
        "exec_at": "guest uptime when /init execs the agent",
        "listening": "agent listening, after its exec",
        "agent_ready_s": "domain start to the agent's first answer",
        "agent_uptime_s": "agent listening to its first answer",
    }
    for name, values in stages.items():
        if values:
            g = summary(values)
            print(f"  {labels[name]:<40} {g['median']:6.2f}s ({g['p90']:.2f}s)")
    if args.json:
        raw = {"floor": floor, "ready": ready, "running": running, "pss_mib": memory}
        print(json.dumps({**raw, "stages": stages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
