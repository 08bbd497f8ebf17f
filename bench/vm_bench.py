"""VM pod start latency and host memory overhead, against the bare boot floor.

In one run, on the same kernel and initrd:

* floor: plain ``qemu-system-x86_64`` boots the guest kernel to ``/init``
  (``vmcri.mode=floor`` prints a marker and powers off); wall time from spawn
  to the marker;
* vmcri: RunPodSandbox until it returns (the sandbox is Ready), and until a
  first container runs (Create + Start), through a real daemon, for a cold-booted
  pod (handler ``vmcold``: ``template = "off"``) and a pod restored from a VM
  template (handler ``vm``), alternating; the template's one-time build is timed too;
* 10 restored pods started at once: the time until all are Ready, and the CPU time a
  restored pod's QEMU spends until Ready (N pods on C cores cannot be Ready sooner than
  N x that / C);
* host PSS per idle restored pod with 1, 10 and 30 (``--pss``) pods running;
* density: more idle restored pods, one at a time, until RunPodSandbox fails or takes
  more than 3x the restored pods' median, or ``--density-max`` (60) pods run;
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

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
# A restored pod's steps, from the same line (boot.py times them).
RESTORE_MARKS = ("restore_s", "attach_s", "agent_ready_s", "setup_s", "release_share_s")
# Small writable layers (256 MiB): the bench measures start latency and memory, and the
# disk promises (ARCHITECTURE.md, "Writable layers") must not be what stops the density run.
VM_CONFIG = """\
[network]
enabled = false
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
guest_dir = {guest_dir}
writable_layer_mib = 256
[runtimes.vmcold]
backend = "vm"
[runtimes.vmcold.options]
guest_dir = {guest_dir}
template = "off"
writable_layer_mib = 256
"""
MODES = {"cold": "vmcold", "restored": "vm"}


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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def vm_up_timings(
    daemon_log: Path, sandbox_id: str, marks: tuple[str, ...] = HOST_MARKS
) -> dict[str, float]:
    """``marks`` from the daemon's ``VM up`` line for the sandbox: by default
    ``agent_ready_s`` (domain start to first Ping answer) and ``agent_uptime_s`` (the
    agent's uptime in that answer)."""
    wanted = f"sandbox {sandbox_id}: VM up"
    for line in daemon_log.read_text(errors="replace").splitlines():
        if wanted in line:
            entry = json.loads(line)
            return {key: float(entry[key]) for key in marks if key in entry}
    return {}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0]}


def wait_template(runtime: Any, timeout_s: float = 600) -> float:
    """Seconds until the daemon reports a VM template (it builds one at start)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        status = runtime.Status(pb.StatusRequest(), timeout=30).status
        if any(c.type == "VmTemplates" and c.status for c in status.conditions):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError("no VM template was made")


def pod_config(tmp: Path, name: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"u-{name}", namespace="bench"),
        hostname=name,
        log_directory=str(tmp / "logs" / name),
    )


def run_pod(runtime: Any, tmp: Path, name: str, handler: str) -> tuple[str, float]:
    started = time.monotonic()
    request = pb.RunPodSandboxRequest(config=pod_config(tmp, name), runtime_handler=handler)
    sandbox_id = runtime.RunPodSandbox(request, timeout=600).pod_sandbox_id
    return sandbox_id, time.monotonic() - started


def started_as(runtime: Any, sandbox_id: str) -> str:
    request = pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
    info = runtime.PodSandboxStatus(request, timeout=30).info["info"]
    return str(json.loads(info)["runtime"]["start"])


def pod_pss_mib(tmp: Path, sandbox_id: str, handler: str = "vm") -> tuple[float, list[str]]:
    pod_dir = tmp / "state/backends" / handler / sandbox_id
    processes = pod_processes(sandbox_id, pod_dir / "share")
    return sum(pss_kib(pid) for pid in processes.values()) / 1024, list(processes)


def remove(runtime: Any, sandbox_ids: list[str]) -> None:
    for sandbox_id in sandbox_ids:
        runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=10, help="pods started at once")
    parser.add_argument("--pss", default="1,10,30", help="idle pod counts to read PSS at")
    parser.add_argument(
        "--density-max", type=int, default=60, help="stop adding idle pods here (0: skip)"
    )
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

    floor: list[float] = []
    ready: dict[str, list[float]] = {mode: [] for mode in MODES}
    running: dict[str, list[float]] = {mode: [] for mode in MODES}
    memory: dict[str, list[float]] = {mode: [] for mode in MODES}
    stages: dict[str, list[float]] = {name: [] for name in (*GUEST_MARKERS, *HOST_MARKS)}
    pss_at: dict[int, float] = {}
    qemu_cpu: list[float] = []  # CPU seconds of a restored pod's QEMU until Ready
    restore_steps: dict[str, list[float]] = {name: [] for name in RESTORE_MARKS}
    density: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vmcri-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with LocalRegistry(tmp / "registry") as registry:
            push_busybox_image(registry.host, "bench/busybox:1")
            image = f"{registry.host}/bench/busybox:1"
            config = tmp / "vmcri.toml"
            config.write_text(VM_CONFIG.format(guest_dir=json.dumps(str(guest_dir))))
            # log level info: debug would slow the guest's boot. Own templates: timed here.
            daemon = start_daemon(tmp, config=config, log_level="info", templates=None)
            try:
                runtime = daemon.runtime()
                build_s = wait_template(runtime)
                print(f"VM template ready {build_s:.1f}s after the daemon started", flush=True)
                daemon.images().PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300
                )
                for run in range(args.runs):
                    floor.append(boot_floor(accel, kernel, guest_dir / "initrd.img", 256))
                    line = [f"run {run + 1}/{args.runs}: floor {floor[-1]:.2f}s"]
                    for mode, handler in MODES.items():
                        name = f"{mode}-{run}"
                        sandbox_id, took = run_pod(runtime, tmp, name, handler)
                        ready[mode].append(took)
                        assert started_as(runtime, sandbox_id) == mode, (mode, sandbox_id)
                        if mode == "restored":
                            pod_dir = tmp / "state/backends/vm" / sandbox_id
                            qemu = pod_processes(sandbox_id, pod_dir / "share")["qemu"]
                            qemu_cpu.append(cpu_s(qemu))
                            steps = vm_up_timings(daemon.log, sandbox_id, RESTORE_MARKS)
                            for mark, value in steps.items():
                                restore_steps[mark].append(value)
                        container = pb.ContainerConfig(
                            metadata=pb.ContainerMetadata(name="c"),
                            image=pb.ImageSpec(image=image),
                            command=["sleep", "1000"],
                        )
                        started = time.monotonic() - took
                        container_id = runtime.CreateContainer(
                            pb.CreateContainerRequest(
                                pod_sandbox_id=sandbox_id,
                                config=container,
                                sandbox_config=pod_config(tmp, name),
                            ),
                            timeout=300,
                        ).container_id
                        runtime.StartContainer(
                            pb.StartContainerRequest(container_id=container_id), timeout=300
                        )
                        running[mode].append(time.monotonic() - started)
                        time.sleep(2)  # let the guest settle before reading memory
                        pss, processes = pod_pss_mib(tmp, sandbox_id, handler)
                        memory[mode].append(pss)
                        if mode == "cold":
                            pod_dir = tmp / "state/backends" / handler / sandbox_id
                            marks = guest_timings(pod_dir / "console.log")
                            marks.update(vm_up_timings(daemon.log, sandbox_id))
                            for mark, value in marks.items():
                                stages[mark].append(value)
                        remove(runtime, [sandbox_id])
                        line.append(
                            f"{mode} ready {ready[mode][-1]:.2f}s running "
                            f"{running[mode][-1]:.2f}s PSS {pss:.1f} MiB ({', '.join(processes)})"
                        )
                    print("; ".join(line), flush=True)

                # N restored pods at once: until all are Ready.
                with ThreadPoolExecutor(args.concurrent) as pool:
                    started = time.monotonic()
                    results = list(
                        pool.map(
                            lambda n: run_pod(runtime, tmp, f"burst-{n}", "vm"),
                            range(args.concurrent),
                        )
                    )
                    burst_s = time.monotonic() - started
                burst_ids = [sandbox_id for sandbox_id, _ in results]
                burst_kinds = [started_as(runtime, sandbox_id) for sandbox_id in burst_ids]
                remove(runtime, burst_ids)
                print(f"{args.concurrent} pods at once: all Ready in {burst_s:.2f}s "
                      f"({burst_kinds.count('restored')} restored)", flush=True)  # fmt: skip

                # PSS per idle restored pod at several pod counts.
                idle: list[str] = []
                for count in sorted(int(n) for n in args.pss.split(",")):
                    while len(idle) < count:
                        idle.append(run_pod(runtime, tmp, f"idle-{len(idle)}", "vm")[0])
                    time.sleep(5)  # let the guests settle
                    total = sum(pod_pss_mib(tmp, sandbox_id)[0] for sandbox_id in idle)
                    pss_at[count] = total / count
                    print(f"{count} idle pods: PSS {pss_at[count]:.1f} MiB per pod", flush=True)

                # Density: more idle pods until a start fails or slows past 3x.
                if args.density_max:
                    limit_s = 3 * statistics.median(ready["restored"])
                    density = {"limit_s": limit_s, "stopped": f"--density-max {args.density_max}"}
                    while len(idle) < args.density_max:
                        try:
                            sandbox_id, took = run_pod(runtime, tmp, f"idle-{len(idle)}", "vm")
                        except grpc.RpcError as exc:
                            density["stopped"] = f"RunPodSandbox failed: {exc.code().name}"
                            break
                        idle.append(sandbox_id)
                        density["last_s"] = took
                        if took > limit_s:
                            how = started_as(runtime, sandbox_id)
                            density["stopped"] = (
                                f"RunPodSandbox took {took:.2f}s > {limit_s:.2f}s, {how}"
                            )
                            if how == "cold":  # why the restore was not used
                                density["why"] = [
                                    line
                                    for line in daemon.log.read_text().splitlines()
                                    if sandbox_id in line and "cold boot" in line
                                ][-1:]
                            break
                    density["pods"] = len(idle)
                    if idle:
                        density["pss_mib"] = sum(pod_pss_mib(tmp, s)[0] for s in idle) / len(idle)
                    print(f"density: {len(idle)} idle pods ({density['stopped']})", flush=True)
                    for line in density.get("why", []):
                        print(f"  {line[:400]}", flush=True)
                remove(runtime, idle)
            finally:
                stop_daemon(daemon)
                for handler in MODES.values():  # each handler has a state dir of its own
                    subprocess.run(["umount", "-R", "-l", str(tmp / "state/backends" / handler)],
                                   capture_output=True)  # fmt: skip

    f = summary(floor)
    print(f"\naccel {accel}, kernel {kernel.name}, {args.runs} runs each, medians (p90):")
    print(f"  bare floor (QEMU to /init)          {f['median']:6.2f}s ({f['p90']:.2f}s)")
    print(f"  VM template build (once per shape)  {build_s:6.2f}s")
    for mode in MODES:
        r, c, m = summary(ready[mode]), summary(running[mode]), summary(memory[mode])
        print(f"  {mode:<8} RunPodSandbox -> Ready     {r['median']:6.2f}s ({r['p90']:.2f}s)"
              f"   {r['median'] / f['median']:.2f}x floor")  # fmt: skip
        print(f"  {mode:<8} -> first container running {c['median']:6.2f}s ({c['p90']:.2f}s)"
              f"   {c['median'] / f['median']:.2f}x floor")  # fmt: skip
        print(f"  {mode:<8} host PSS, one pod running   {m['median']:6.1f} MiB ({m['p90']:.1f})")
    cold, warm = summary(ready["cold"]), summary(ready["restored"])
    cold_c, warm_c = summary(running["cold"]), summary(running["restored"])
    print(f"  restored/cold: Ready {warm['median'] / cold['median']:.2f}x, "
          f"first container {warm_c['median'] / cold_c['median']:.2f}x")  # fmt: skip
    print(f"  {args.concurrent} restored pods at once, all Ready  {burst_s:6.2f}s   "
          f"{burst_s / warm['median']:.2f}x one")  # fmt: skip
    cpu = statistics.median(qemu_cpu)
    cores = os.cpu_count() or 1
    print(f"  restored pod's QEMU CPU until Ready  {cpu:6.2f}s: {args.concurrent} pods on "
          f"{cores} cores need >= {args.concurrent * cpu / cores:.2f}s "
          f"({args.concurrent * cpu / cores / warm['median']:.2f}x one)")  # fmt: skip
    for count, value in pss_at.items():
        print(f"  PSS per idle restored pod at {count:>2} pods  {value:6.1f} MiB")
    if density:
        print(f"  density: {density.get('pods', 0)} idle VM pods ({density['stopped']}; "
              f"3x limit {density['limit_s']:.2f}s), PSS "
              f"{density.get('pss_mib', 0):.1f} MiB per pod")  # fmt: skip
    labels = {
        "exec_at": "cold: guest uptime when /init execs the agent",
        "listening": "cold: agent listening, after its exec",
        "agent_ready_s": "cold: domain start to the agent's first answer",
        "agent_uptime_s": "cold: agent listening to its first answer",
    }
    for name, values in stages.items():
        if values:
            g = summary(values)
            print(f"  {labels[name]:<48} {g['median']:6.2f}s ({g['p90']:.2f}s)")
    for name, values in restore_steps.items():
        if values:
            g = summary(values)
            print(f"  restored: {name:<39} {g['median']:6.2f}s ({g['p90']:.2f}s)")
    if args.json:
        raw = {"floor": floor, "ready": ready, "running": running, "pss_mib": memory}
        extra = {"burst_s": burst_s, "pss_at": pss_at, "qemu_cpu_s": qemu_cpu, "density": density}
        print(json.dumps({**raw, "stages": stages, "restore_steps": restore_steps, **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
