"""Benchmark (not a test): vmcri's runc handler against containerd 1.6's CRI plugin, same run.

Both runtimes are driven through their CRI sockets with vmcri's own generated
stubs (the CRI v1 wire format is the contract), with the same busybox image
served by Debian's ``docker-registry`` on loopback and pulled into both first:

* vmcri: ``vmcri serve`` with only the ``runc`` handler, under a scratch root;
* containerd: Debian's ``containerd`` (1.6) with a config of our own, under a
  scratch root (own root, state, sockets, runc root, snapshots; the CRI
  plugin, the runc v2 shim, the registry as plain HTTP through a ``hosts.toml``
  in its own ``config_path``). containerd 1.6 puts its shims' sockets in
  ``/run/containerd/s/`` whatever the config says, so it runs in a private
  mount namespace with a tmpfs of its own on ``/run/containerd``: nothing it
  writes lands where a real containerd on the host looks;
* floor: plain ``runc run --detach`` of the same image's layer, unpacked once.

Each round starts one pod on every runtime in turn (ABAB...) and measures
RunPodSandbox + CreateContainer + StartContainer and, inside that,
CreateContainer + StartContainer alone; each pod is stopped and removed (timed
too) before the next runtime's turn. Medians, p90 and the ratios
vmcri/containerd are printed, plus the median of the per-round ratios.

Network: by default (``--network pod``) every pod gets its own network
namespace with the same scratch CNI conflist for both runtimes (``bridge`` +
``host-local`` on a bridge and subnet of the bench's own, no gateway, no
masquerade, so the host's sysctls and iptables stay as they are). That is what
a kubelet pod costs, and containerd 1.6 refuses a pod whose CNI result has no
IP, so a loopback-only conflist cannot stand in. ``--network host`` runs both
with hostNetwork pods instead: no netns, no CNI, only the runtimes' own work.
Containers and pods are Unconfined for seccomp (kubelet's default) and share
one cgroupfs parent of the bench's, removed at the end.

Needs root and ``scripts/setup.sh --bench`` (installs containerd next to the
project's runc, docker-registry, busybox-static and the CNI plugins)::

    .venv/bin/python bench/containerd_baseline.py [--rounds 20] [--network pod|host]

Targets (issue 11): pod + container start within 1.5x of containerd, container
create + start alone within 1.2x; issue 26: pod + container start within 1.0x, teardown
no slower. ``--spans FILE`` times the daemon's own steps (``bench/spans/``);
``--vmcri-launcher`` runs ``vmcri serve`` under a profiler (py-spy, ``pip install
py-spy``; or strace) in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.daemon.conftest import (  # noqa: E402
    RunningDaemon,
    start_daemon,
    stop_daemon,
)
from tests.support.push import push_busybox_image  # noqa: E402
from tests.support.registry import LocalRegistry  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402
from vmcri.api import api_pb2_grpc  # noqa: E402
from vmcri.host.mounts import HostMounter  # noqa: E402

CONTAINERD = "/usr/bin/containerd"
SHIM = "containerd-shim-runc-v2"
SHIM_SOCKET_DIR = Path("/run/containerd")  # fixed in containerd 1.6: <dir>/s/<sha256>
CNI_BIN = "/usr/lib/cni"
COMMAND = ["sleep", "1000"]
UNCONFINED = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
RPC_TIMEOUT_S = 120
TARGET_POD, TARGET_CONTAINER = 1.0, 1.2  # issue 26 (pod), issue 11 (container)

VMCRI_CONFIG = """\
registries_conf = {registries}
default_runtime_handler = "runc"
[network]
cni_conf_dir = {conf_dir}
cni_bin_dirs = [{cni_bin}]
[runtimes.runc]
backend = "runc"
"""

CONTAINERD_CONFIG = """\
version = 2
root = {root}
state = {state}
# opt would create /opt/containerd; tracing and snapshotters other than overlayfs are not
# used. (The v1 runtime stays: the tasks service, which CRI needs, loads it.)
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = {runc_root}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Even root cannot lower oom_score_adj here; without this the pause container's -998 fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = {runc_root}
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {conf_dir}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {certs_d}
"""

HOSTS_TOML = """\
server = "http://{host}"
[host."http://{host}"]
  capabilities = ["pull", "resolve"]
"""


def q(value: object) -> str:
    """A TOML (and JSON) string literal."""
    return json.dumps(str(value))


# -- the CRI client side, the same for both runtimes -----------------------------------


@dataclass
class Cri:
    """One runtime under test, reached over its CRI socket."""

    name: str
    socket: Path
    handler: str
    runtime: api_pb2_grpc.RuntimeServiceStub = field(init=False)
    images: api_pb2_grpc.ImageServiceStub = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        channel = grpc.insecure_channel(f"unix:{self.socket}")
        grpc.channel_ready_future(channel).result(timeout=60)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(channel)
        self.images = api_pb2_grpc.ImageServiceStub(channel)
        try:  # UNIMPLEMENTED here: the socket answers, but not with CRI (plugin not loaded)
            version = self.runtime.Version(pb.VersionRequest(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise RuntimeError(f"{self.name}: no CRI on {self.socket}: {exc}") from exc
        self.version = f"{version.runtime_name} {version.runtime_version}"

    def pull(self, image: str) -> None:
        spec = pb.ImageSpec(image=image)
        self.images.PullImage(pb.PullImageRequest(image=spec), timeout=RPC_TIMEOUT_S)

    def remove_all(self) -> None:
        """Stop and remove every pod (teardown after a failure, too)."""
        listed = self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT_S)
        for sandbox in listed.items:
            self.remove(sandbox.id)

    def remove(self, sandbox_id: str) -> None:
        self.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=RPC_TIMEOUT_S
        )
        self.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=RPC_TIMEOUT_S
        )


@dataclass
class Samples:
    pod: list[float] = field(default_factory=list)  # RunPodSandbox + Create + Start
    container: list[float] = field(default_factory=list)  # Create + Start
    teardown: list[float] = field(default_factory=list)  # StopPodSandbox + RemovePodSandbox


def pod_config(top: Path, name: str, cgroup_parent: str, host_network: bool) -> pb.PodSandboxConfig:
    mode = pb.NODE if host_network else pb.POD
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
        # A hostNetwork pod shares the node's UTS namespace: runc refuses to set a hostname.
        hostname="" if host_network else name,
        log_directory=str(top / "logs" / name),
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=mode), seccomp=UNCONFINED
            ),
        ),
    )


def start_pod(cri: Cri, config: pb.PodSandboxConfig, image: str, samples: Samples) -> None:
    """One timed pod + container start, a check that it runs, and a timed teardown."""
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        image=pb.ImageSpec(image=image),
        command=COMMAND,
        log_path="c.log",
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(seccomp=UNCONFINED)
        ),
    )
    rt = cri.runtime
    t0 = time.perf_counter()
    sandbox_id = rt.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config, runtime_handler=cri.handler), timeout=RPC_TIMEOUT_S
    ).pod_sandbox_id
    t1 = time.perf_counter()
    container_id = rt.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
        ),
        timeout=RPC_TIMEOUT_S,
    ).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=container_id), timeout=RPC_TIMEOUT_S)
    t2 = time.perf_counter()
    state = rt.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container_id), timeout=RPC_TIMEOUT_S
    ).status.state
    if state != pb.CONTAINER_RUNNING:
        raise RuntimeError(
            f"{cri.name}: container {container_id} is {pb.ContainerState.Name(state)}"
        )
    t3 = time.perf_counter()
    cri.remove(sandbox_id)
    samples.teardown.append(time.perf_counter() - t3)
    samples.pod.append(t2 - t0)
    samples.container.append(t2 - t1)


# -- containerd under a scratch root ---------------------------------------------------


@dataclass
class Containerd:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    made_socket_dir: bool


def start_containerd(top: Path, registry: str, pause: str, conf_dir: Path) -> Containerd:
    base = top / "containerd"
    certs = base / "certs.d" / registry
    certs.mkdir(parents=True)
    (certs / "hosts.toml").write_text(HOSTS_TOML.format(host=registry))
    socket = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        CONTAINERD_CONFIG.format(
            root=q(base / "root"),
            state=q(base / "state"),
            socket=q(socket),
            pause=q(pause),
            runc_root=q(base / "runc"),
            cni_bin=q(CNI_BIN),
            conf_dir=q(conf_dir),
            certs_d=q(base / "certs.d"),
        )
    )
    made = not SHIM_SOCKET_DIR.exists()
    SHIM_SOCKET_DIR.mkdir(mode=0o711, exist_ok=True)
    log = base / "containerd.log"
    # A private mount namespace with its own /run/containerd: the shims' sockets go there.
    script = f'mount -t tmpfs -o mode=0711 vmcri-bench "{SHIM_SOCKET_DIR}" && exec "$0" "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    argv += [CONTAINERD, "--config", str(config), "--log-level", "info"]
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"containerd did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return Containerd(process, socket, log, made)


def stop_containerd(daemon: Containerd) -> None:
    if daemon.process.poll() is None:
        daemon.process.terminate()
        try:
            daemon.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()
    # Shims outlive containerd; any left (a failed run) are ours when they name our socket.
    for pid in processes_naming(SHIM, str(daemon.socket)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if daemon.made_socket_dir:
        with contextlib.suppress(OSError):
            SHIM_SOCKET_DIR.rmdir()


def processes_naming(*words: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if all(word in cmdline for word in words):
            found.append(int(entry.name))
    return found


# -- the plain runc floor --------------------------------------------------------------


def make_bundle(top: Path, layer_blob: Path, cgroup_parent: str) -> Path:
    bundle = top / "runc-bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(layer_blob), "-C", str(rootfs)], check=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": "rootfs", "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = COMMAND
    spec["linux"]["cgroupsPath"] = f"{cgroup_parent}/runc-floor"
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def runc_run(root: Path, bundle: Path, n: int, samples: Samples) -> None:
    cid = f"floor-{n}"
    argv = ["runc", "--root", str(root), "run", "--detach", "--bundle", str(bundle), cid]
    null = subprocess.DEVNULL
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdin=null, stdout=null, stderr=null)
    samples.pod.append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=True)
    samples.teardown.append(time.perf_counter() - t1)


def remove_runc_floor(root: Path) -> None:
    if not root.exists():
        return
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True
    )
    for cid in out.stdout.split():
        subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=False)


# -- host state of the bench's own -----------------------------------------------------


def conflist(bridge: str, subnet: str, ipam_dir: Path) -> str:
    ipam = {"type": "host-local", "dataDir": str(ipam_dir), "ranges": [[{"subnet": subnet}]]}
    # No isGateway (it would turn on the host's ip_forward), no ipMasq (iptables).
    plugin = {"type": "bridge", "bridge": bridge, "ipam": ipam}
    return json.dumps({"cniVersion": "1.0.0", "name": "vmcri-bench", "plugins": [plugin]})


def remove_bridge(bridge: str) -> None:
    """The bridge the CNI plugin made (absent with --network host: nothing to do)."""
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def remove_cgroup_tree(parent: str) -> None:
    """rmdir ``parent`` (and what is left below it) in every cgroup hierarchy."""
    with open("/proc/self/mountinfo") as f:
        points = [
            line.split()[4]
            for line in f
            if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")
        ]
    for point in points:
        top = Path(point) / parent.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


# -- report ----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def report(results: dict[str, Samples], rounds: int, network: str) -> None:
    v, c, r = results["vmcri"], results["containerd"], results.get("runc")
    print(f"\n{rounds} rounds (after warm-up), network {network}; milliseconds, median (p90):")
    rows: list[tuple[str, Callable[[Samples], list[float]]]] = [
        ("pod + container start", lambda s: s.pod),
        ("container create + start", lambda s: s.container),
        ("stop + remove pod", lambda s: s.teardown),
    ]
    print(f"  {'':28}{'vmcri':>16}{'containerd':>16}{'vmcri/ctrd':>12}{'paired':>9}")
    for label, pick in rows:
        a, b = pick(v), pick(c)
        paired = med([x / y for x, y in zip(a, b, strict=True)])
        print(
            f"  {label:28}{med(a) * 1e3:8.1f} ({p90(a) * 1e3:5.0f}){med(b) * 1e3:8.1f} "
            f"({p90(b) * 1e3:5.0f}){med(a) / med(b):11.2f}x{paired:8.2f}x"
        )
    if r is not None:
        print(
            f"  plain runc run --detach: {med(r.pod) * 1e3:.1f} ms ({p90(r.pod) * 1e3:.0f}); "
            f"vmcri pod start {med(v.pod) / med(r.pod):.1f}x it, "
            f"containerd {med(c.pod) / med(r.pod):.1f}x"
        )
    pod, ctr = med(v.pod) / med(c.pod), med(v.container) / med(c.container)
    print(
        f"  targets: pod + container <= {TARGET_POD}x: {pod:.2f}x "
        f"{'met' if pod <= TARGET_POD else 'NOT met'}; container <= {TARGET_CONTAINER}x: "
        f"{ctr:.2f}x {'met' if ctr <= TARGET_CONTAINER else 'NOT met'}"
    )


def report_spans(path: Path, warmup: int) -> None:
    """Each timed step of the daemon (one line per call, the warm-up rounds' left out)."""
    calls: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        name, _, ms = line.rpartition(" ")
        calls.setdefault(name, []).append(float(ms) / 1e3)
    print("\nvmcri's steps, per call (--spans); milliseconds, median (p90):")
    for name, values in sorted(calls.items(), key=lambda kv: -med(kv[1][warmup:] or kv[1])):
        counted = values[warmup:] or values
        print(f"  {name:44}{med(counted) * 1e3:8.1f} ({p90(counted) * 1e3:5.0f})  n={len(counted)}")


# -- the run ---------------------------------------------------------------------------


def stop_vmcri(daemon: RunningDaemon) -> None:
    """SIGTERM the daemon; under a launcher (strace, py-spy) the daemon is its child."""
    pid = daemon.process.pid
    try:
        launched = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] != [b"-m", b"vmcri"]
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone already
        launched, children = False, []
    if launched:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the launcher writes its output
            daemon.process.wait(timeout=120)
    stop_daemon(daemon)


@dataclass
class Scratch:
    """What one run makes on the host, so that clean-up can undo it."""

    top: Path
    bridge: str
    cgroup_parent: str
    runtimes: list[Cri] = field(default_factory=list)
    containerd: Containerd | None = None
    vmcri: RunningDaemon | None = None


def cleanup(run: Scratch, *, keep: bool) -> None:
    """Undo everything, each step on its own: one failing does not leave the rest behind."""
    steps: list[Callable[[], None]] = [cri.remove_all for cri in run.runtimes]
    if (containerd := run.containerd) is not None:
        steps.append(lambda: stop_containerd(containerd))
    if (vmcri := run.vmcri) is not None:
        steps.append(lambda: stop_vmcri(vmcri))
    steps += [
        lambda: remove_runc_floor(run.top / "runc-root"),
        lambda: remove_bridge(run.bridge),
        lambda: HostMounter().unmount_below(run.top),
        lambda: remove_cgroup_tree(run.cgroup_parent),
    ]
    for step in steps:
        try:
            step()
        except Exception as exc:  # report it, and go on with the next step
            print(f"clean-up: {exc}", file=sys.stderr)
    if keep:
        print(f"kept {run.top}")
    elif not mount_points_below(run.top):
        shutil.rmtree(run.top, ignore_errors=True)


def mount_points_below(top: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [p for p in (line.split()[4] for line in f) if p.startswith(f"{top}/")]


def check_host() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    for tool in (CONTAINERD, "/usr/bin/docker-registry", f"{CNI_BIN}/bridge"):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} missing: run scripts/setup.sh --bench")
    if shutil.which("runc") is None or shutil.which("unshare") is None:
        raise SystemExit("runc or unshare missing: run scripts/setup.sh --bench")


def measure(
    run: Scratch, image: str, bundle: Path | None, args: argparse.Namespace
) -> dict[str, Samples]:
    """Warm-up, then the counted rounds: each runtime in turn, one pod each."""
    names = [cri.name for cri in run.runtimes] + (["runc"] if bundle else [])
    results = {name: Samples() for name in names}
    for n in range(args.warmup + args.rounds):
        spent = {name: Samples() for name in names}
        for cri in run.runtimes:
            config = pod_config(
                run.top, f"{cri.name}-{n}", run.cgroup_parent, args.network == "host"
            )
            start_pod(cri, config, image, spent[cri.name])
        if bundle is not None:
            runc_run(run.top / "runc-root", bundle, n, spent["runc"])
        line = ", ".join(f"{k} {s.pod[0] * 1e3:.0f} ms" for k, s in spent.items())
        counted = n >= args.warmup
        label = f"round {n - args.warmup + 1}" if counted else f"warm-up {n + 1}"
        print(f"{label}: {line}", flush=True)
        if counted:
            for name, s in spent.items():
                results[name].pod += s.pod
                results[name].container += s.container
                results[name].teardown += s.teardown
    return results


def bench(run: Scratch, args: argparse.Namespace) -> dict[str, Samples]:
    """Registry, images, both runtimes up and pulled; then :func:`measure`."""
    top = run.top
    with LocalRegistry(top / "registry") as registry:
        pushed = push_busybox_image(registry.host, "bench/busybox:1")
        push_busybox_image(registry.host, "bench/pause:1", cmd=["sleep", "2147483647"])
        image, pause = f"{registry.host}/bench/busybox:1", f"{registry.host}/bench/pause:1"
        subnet = f"10.{random.randint(150, 250)}.{random.randint(0, 255)}.0/24"
        conf_dir = top / "net.d"
        conf_dir.mkdir()
        (conf_dir / "10-bench.conflist").write_text(conflist(run.bridge, subnet, top / "ipam"))
        registries = top / "registries.conf"
        registries.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
        config = top / "vmcri.toml"
        config.write_text(
            VMCRI_CONFIG.format(registries=q(registries), conf_dir=q(conf_dir), cni_bin=q(CNI_BIN))
        )
        (top / "vmcri").mkdir()
        # vmcri starts Python helpers per pod and per container; a node caches their
        # bytecode (__pycache__), so do not inherit a PYTHONDONTWRITEBYTECODE of the shell
        # (it costs each helper ~8 ms of compiling here).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        launcher = shlex.split(args.vmcri_launcher)
        if args.spans:
            args.spans.unlink(missing_ok=True)
            path = os.pathsep.join([str(REPO / "bench" / "spans"), str(REPO)])
            launcher = ["env", f"PYTHONPATH={path}", f"VMCRI_SPANS={args.spans}", *launcher]
        run.vmcri = start_daemon(top / "vmcri", config=config, log_level="info", launcher=launcher)
        run.containerd = start_containerd(top, registry.host, pause, conf_dir)
        run.runtimes = [
            Cri("vmcri", run.vmcri.socket, "runc"),
            Cri("containerd", run.containerd.socket, "runc"),
        ]
        for cri in run.runtimes:
            cri.pull(image)
        run.runtimes[1].pull(pause)
        pids = (run.vmcri.process.pid, run.containerd.process.pid)
        for cri, pid in zip(run.runtimes, pids, strict=True):
            print(f"{cri.name}: {cri.version}, pid {pid}")
        bundle = None
        if not args.no_runc:
            digest = pushed.layer_digests[0].removeprefix("sha256:")
            blobs = registry.storage / "docker/registry/v2/blobs/sha256"
            bundle = make_bundle(top, blobs / digest[:2] / digest / "data", run.cgroup_parent)
        return measure(run, image, bundle, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (>= 10)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first, not counted")
    parser.add_argument("--network", choices=("pod", "host"), default="pod")
    parser.add_argument("--no-runc", action="store_true", help="leave out the plain runc floor")
    parser.add_argument("--json", action="store_true", help="also print the raw seconds")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs)")
    parser.add_argument(
        "--spans",
        type=Path,
        help="time the daemon's steps of each pod (bench/spans/sitecustomize.py) into this "
        "file and print their medians and p90s",
    )
    parser.add_argument(
        "--vmcri-launcher",
        default="",
        help="run vmcri serve under this command, to profile it, e.g. "
        "'strace --seccomp-bpf -f -ttt -e trace=execve,exit_group -o /tmp/vmcri.strace' "
        "or 'py-spy record --idle --subprocesses -f raw -o /tmp/vmcri.raw --'",
    )
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds: at least 10")
    check_host()
    tag = f"{random.randint(0, 0xFFFFF):05x}"
    run = Scratch(
        top=Path(tempfile.mkdtemp(prefix="vmcri-ctrd-bench-")),
        bridge=f"vmcrict{tag}",
        cgroup_parent=f"/vmcri-ctrd-bench-{tag}",
    )
    try:
        results = bench(run, args)
    finally:
        cleanup(run, keep=args.keep)
    report(results, args.rounds, args.network)
    if args.spans:
        report_spans(args.spans, args.warmup)
    if args.json:
        print(json.dumps({k: vars(s) for k, s in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
