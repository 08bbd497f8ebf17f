"""vmcri configuration: a TOML file read once at start-up into frozen dataclasses.

Every key has a default (documented next to its field), so no file is needed.
Unknown keys and values of the wrong type or outside their range are refused
with a :class:`~vmcri.errors.ConfigError` naming the key. Each runtime handler's
``options`` table is validated by its backend's own options dataclass
(see ``vmcri.handlers.registry``) with the same strict parser, :func:`parse_section`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from vmcri.errors import ConfigError
from vmcri.metrics.address import check_metrics_address

DEFAULT_CONFIG_PATH = Path("/etc/vmcri/config.toml")
SOURCE_TREE = Path(__file__).resolve().parent.parent

LogLevel = Literal["debug", "info", "warning", "error"]
CgroupDriver = Literal["cgroupfs", "systemd"]


STREAMING_MAX_SESSIONS = 64  # vmcri.streaming.server.ServerLimits.max_sessions


@dataclass(frozen=True)
class StreamingConfig:
    """The HTTP server that Exec/Attach/PortForward URLs point at."""

    address: str = "127.0.0.1"  # listen address; keep it on loopback unless kubelet is remote
    port: int = 0  # 0 picks a free port at start-up
    # No traffic for this long ends a session (kubelet's --streaming-connection-idle-timeout).
    idle_timeout_s: float = 4 * 3600.0
    # Sessions one pod sandbox may hold at once (of 64 on the node), so one tenant's
    # port-forwards or execs cannot turn another's away.
    max_sessions_per_pod: int = 16


@dataclass(frozen=True)
class CriConfig:
    """Bounds on CRI calls that may hold a server thread for long (``vmcri.cri.call_classes``).

    kubelet's every-second calls are never limited and never wait behind these. Over a
    bound a call is refused at once with RESOURCE_EXHAUSTED naming the pod and the key.
    """

    # Slow calls in flight on the node, each of the two kinds (work: ExecSync, PullImage,
    # Run/Create/Start...; teardown: Stop/Remove of a live container or sandbox).
    max_slow_calls: int = 128
    # Of those, per pod: one pod's probes or grace periods cannot take the node's capacity.
    max_slow_calls_per_pod: int = 16
    # GetContainerEvents streams open at once (each holds a thread while it listens).
    max_event_streams: int = 8

    @property
    def slow_threads(self) -> int:
        """Server threads slow calls can hold at most, all classes together."""
        return 2 * self.max_slow_calls + self.max_event_streams


@dataclass(frozen=True)
class NetworkConfig:
    """Pod networking through CNI plugins (see ``vmcri.network``)."""

    # false: pods get a network namespace with loopback only, and NetworkReady stays false.
    enabled: bool = True
    # The first valid *.conflist, *.conf or *.json file here (by name) is the pod network;
    # re-read whenever the directory changes, so no restart is needed.
    cni_conf_dir: str = "/etc/cni/net.d"
    # Where plugin binaries are looked up, in order (CNI_PATH).
    cni_bin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    # A plugin that has not answered after this many seconds is killed and the call fails.
    plugin_timeout_s: float = 60.0
    # The interface name inside the pod (CNI_IFNAME).
    interface: str = "eth0"


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (``/metrics`` over HTTP, no authentication)."""

    address: str = ""  # "host:port" to serve on; "" turns the endpoint off
    allow_non_loopback: bool = False  # anyone who reaches it reads pod names and rates
    # Connections still sending their request, and again being answered; cut to fit an
    # eighth of the daemon's RLIMIT_NOFILE. Beyond it the oldest unfinished one is dropped.
    max_connections: int = 64
    # Seconds from accept to the last byte of the answer (half of it for the request head).
    request_timeout_s: float = 10.0


@dataclass(frozen=True)
class ImageTrustConfig:
    """Which images may be pulled: signature policy and stores (``vmcri.images.trust``).

    Every file is read and checked at start-up; an invalid one stops the daemon, naming
    the key. A running daemon re-reads a changed file; an invalid edit refuses what it
    covers, naming the key. A missing policy file accepts every image (containers-common's
    default). CreateContainer checks the image against the pod's namespace's policy too.
    """

    # containers-policy.json(5): the node's signature policy.
    policy: str = "/etc/containers/policy.json"
    # containers-registries.d(5): where signatures are found (lookaside, attachments).
    registries_d: str = "/etc/containers/registries.d"
    # <dir>/<namespace>.json replaces the node's policy for that namespace's pods (CRI-O's
    # signature_policy_dir); a missing directory means no per-namespace policies.
    signature_policy_dir: str = "/etc/vmcri/policies"


@dataclass(frozen=True)
class NriConfig:
    """Node Resource Interface plugins (``vmcri.nri``), as containerd's NRI section."""

    enable: bool = False  # off by default, as in containerd: nothing changes unless set
    # The socket external plugins connect to; made root-only (0600 in a 0700 directory).
    socket_path: str = "/var/run/nri/nri.sock"
    # Pre-installed plugins vmcri starts itself: executables named NN-name (NN the index).
    plugin_path: str = "/opt/nri/plugins"
    # Their configuration: NN-name.conf, else name.conf, handed over in Configure.
    plugin_config_path: str = "/etc/nri/conf.d"
    # Seconds a plugin has to call RegisterPlugin after it connects or is started.
    registration_timeout_s: float = 5.0
    # Seconds a plugin has to answer any call (and to take our request) before it is
    # disconnected; a lifecycle call waits at most this long per subscribed plugin.
    request_timeout_s: float = 2.0
    # true: only pre-installed plugins; the socket is not opened.
    disable_connections: bool = False


@dataclass(frozen=True)
class RuntimeHandlerConfig:
    """One RuntimeClass handler: which backend runs its pods, with which options."""

    backend: Literal["vm", "runc"] = "vm"
    options: dict[str, Any] = field(default_factory=dict)  # checked by the backend
    # Where host-network pods asking for this handler go when its backend cannot run them
    # (the vm backend); "" refuses them with INVALID_ARGUMENT.
    host_network_handler: str = ""


def _default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {
        "vm": RuntimeHandlerConfig(backend="vm"),
        "runc": RuntimeHandlerConfig(backend="runc"),
    }


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    root: str = "/var/lib/vmcri"  # persistent state: records, image store
    state: str = "/run/vmcri"  # runtime state: per-sandbox sockets and dirs, the lock
    socket: str = "/run/vmcri/vmcri.sock"  # the CRI gRPC unix socket (mode 0660)
    log_level: LogLevel = "info"
    default_runtime_handler: str = "vm"  # what the empty RuntimeClass handler "" means
    registries_conf: str = "/etc/containers/registries.conf"  # containers-registries.conf(5)
    cgroup_driver: CgroupDriver = "cgroupfs"  # reported by RuntimeConfig; systemd needs an init
    cri: CriConfig = field(default_factory=CriConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    image_trust: ImageTrustConfig = field(default_factory=ImageTrustConfig)
    nri: NriConfig = field(default_factory=NriConfig)
    runtimes: dict[str, RuntimeHandlerConfig] = field(default_factory=_default_runtimes)

    def __post_init__(self) -> None:
        if not self.runtimes:
            raise ConfigError("runtimes: at least one runtime handler must be configured")
        for name in self.runtimes:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(
                    f"runtimes.{name!r}: handler names must be non-empty [A-Za-z0-9_-]"
                )
        for name, handler in self.runtimes.items():
            route = handler.host_network_handler
            if route and (route not in self.runtimes or route == name):
                raise ConfigError(
                    f"runtimes.{name}.host_network_handler: {route!r} is not another "
                    "configured runtime handler"
                )
        if self.default_runtime_handler not in self.runtimes:
            raise ConfigError(
                f"default_runtime_handler: {self.default_runtime_handler!r} is not one of the "
                f"configured runtimes ({', '.join(sorted(self.runtimes))})"
            )
        for key in ("root", "state", "socket"):
            if not Path(getattr(self, key)).is_absolute():
                raise ConfigError(f"{key}: must be an absolute path")
        cri = self.cri
        if not 0 < cri.max_slow_calls <= 4096:
            raise ConfigError("cri.max_slow_calls: must be between 1 and 4096")
        if not 0 < cri.max_slow_calls_per_pod <= cri.max_slow_calls:
            raise ConfigError(
                "cri.max_slow_calls_per_pod: must be between 1 and cri.max_slow_calls"
            )
        if not 0 < cri.max_event_streams <= 1024:
            raise ConfigError("cri.max_event_streams: must be between 1 and 1024")
        if not 0 <= self.streaming.port <= 65535:
            raise ConfigError("streaming.port: must be between 0 and 65535")
        if not 0 < self.streaming.idle_timeout_s <= 7 * 24 * 3600:
            raise ConfigError("streaming.idle_timeout_s: must be between 0 and 604800 seconds")
        if not 0 < self.streaming.max_sessions_per_pod <= STREAMING_MAX_SESSIONS:
            raise ConfigError(
                f"streaming.max_sessions_per_pod: must be between 1 and {STREAMING_MAX_SESSIONS}"
            )
        net = self.network
        for i, d in enumerate((net.cni_conf_dir, *net.cni_bin_dirs)):
            if not Path(d).is_absolute():
                where = "cni_conf_dir" if i == 0 else f"cni_bin_dirs[{i - 1}]"
                raise ConfigError(f"network.{where}: must be an absolute path")
        if not 0 < net.plugin_timeout_s <= 3600:
            raise ConfigError("network.plugin_timeout_s: must be between 0 and 3600 seconds")
        if not 0 < len(net.interface) < 16 or "/" in net.interface or " " in net.interface:
            raise ConfigError("network.interface: must be a Linux interface name (1-15 bytes)")
        if self.metrics.address:
            check_metrics_address(self.metrics.address, self.metrics.allow_non_loopback)
        if not 0 < self.metrics.max_connections <= 4096:
            raise ConfigError("metrics.max_connections: must be between 1 and 4096")
        if not 0 < self.metrics.request_timeout_s <= 300:
            raise ConfigError("metrics.request_timeout_s: must be between 0 and 300 seconds")
        for key in ("policy", "registries_d", "signature_policy_dir"):
            if not Path(getattr(self.image_trust, key)).is_absolute():
                raise ConfigError(f"image_trust.{key}: must be an absolute path")
        nri = self.nri
        for key in ("socket_path", "plugin_path", "plugin_config_path"):
            if not Path(getattr(nri, key)).is_absolute():
                raise ConfigError(f"nri.{key}: must be an absolute path")
        if not 0 < nri.registration_timeout_s <= 300:
            raise ConfigError("nri.registration_timeout_s: must be between 0 and 300 seconds")
        if not 0 < nri.request_timeout_s <= 300:
            raise ConfigError("nri.request_timeout_s: must be between 0 and 300 seconds")

    @property
    def root_dir(self) -> Path:
        return Path(self.root)

    @property
    def state_dir(self) -> Path:
        return Path(self.state)


T = TypeVar("T")


def parse_section(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or '<top>'}: expected a table")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{name}: unknown key (known keys here: {known})")
        kwargs[key] = _convert(hints[key], value, name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or '<top>'}: {exc}") from exc


def _convert(hint: Any, value: Any, name: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{name}: {value!r} is not one of {allowed}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            if arg is type(None) and value is None:
                return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, name)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list")
        return tuple(_convert(args[0], item, f"{name}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table")
        return {k: _convert(args[1], v, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return parse_section(hint, value, name)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string")
        return value
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")


def load_config(path: Path | None = None) -> Config:
    """Read the configuration; a missing default file means all defaults.

    Raises ConfigError for an unreadable or malformed file, unknown keys, bad values.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from exc
        return Config()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    return parse_config_text(text, source=str(path))


def parse_config_text(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if "runtimes" in data and not isinstance(data["runtimes"], dict):
        raise ConfigError("runtimes: expected a table of runtime handlers")
    return parse_section(Config, data)


def with_overrides(config: Config, **overrides: Any) -> Config:
    """The config with command-line overrides (None means keep) applied and re-validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **changes) if changes else config


DEFAULT_CONFIG_TEXT = """\
# vmcri configuration (TOML). Every key below shows its built-in default;
# delete what you do not change. Unknown keys are refused at start-up.

# Persistent state: sandbox/container records and the image store.
root = "/var/lib/vmcri"
# Runtime state: per-sandbox sockets and directories, the daemon lock.
state = "/run/vmcri"
# The CRI gRPC unix socket kubelet and crictl connect to (mode 0660).
socket = "/run/vmcri/vmcri.sock"
# debug, info, warning or error. Logs are JSON lines on stderr.
log_level = "info"
# The handler used when a pod names no RuntimeClass (handler "").
default_runtime_handler = "vm"
# Registry mirrors, insecure and blocked registries, containers-registries.conf(5) v2.
# A missing file means: no mirrors, every registry over HTTPS.
registries_conf = "/etc/containers/registries.conf"
# Reported to kubelet by the RuntimeConfig RPC: cgroupfs or systemd.
cgroup_driver = "cgroupfs"

[cri]
# CRI calls that may run for long hold a server thread each: kubelet's every-second calls
# (List*, Status, Version, stats) never wait behind them, and over these bounds a slow call
# is refused at once with RESOURCE_EXHAUSTED (kubelet retries; a probe refused so is
# neither a success nor a failure). Slow calls in flight on the node, of each kind
# (work: ExecSync, PullImage, RunPodSandbox, Create/StartContainer...; teardown: Stop and
# Remove of a live container or sandbox).
max_slow_calls = 128
# Of those, per pod (its sandbox; RunPodSandbox and PullImage by the pod's UID).
max_slow_calls_per_pod = 16
# GetContainerEvents streams open at once.
max_event_streams = 8

[streaming]
# Exec, Attach and PortForward URLs point at this HTTP server.
address = "127.0.0.1"
# 0 picks a free port at start-up.
port = 0
# Seconds without traffic after which a session ends (kubelet's
# --streaming-connection-idle-timeout; 4 hours).
idle_timeout_s = 14400
# Sessions (exec, attach, port-forward) one pod may hold at once, of 64 on the node:
# beyond it that pod's next session gets 503 naming this limit, others' still start.
max_sessions_per_pod = 16

[network]
# false: pods get loopback only (NetworkReady stays false).
enabled = true
# The first valid *.conflist, *.conf or *.json file here (by name) is the pod network.
# Changes are picked up without a restart.
cni_conf_dir = "/etc/cni/net.d"
# Where CNI plugin binaries are looked up, in order.
cni_bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
# Seconds a plugin may take before it is killed and the call fails.
plugin_timeout_s = 60
# The pod's interface name (CNI_IFNAME).
interface = "eth0"

[metrics]
# Serve Prometheus metrics on this "host:port" (for example "127.0.0.1:9464").
# "" turns the endpoint off. It has no authentication, so only loopback
# addresses are accepted unless allow_non_loopback = true.
address = ""
# Accept a non-loopback address: anyone reaching it reads the metrics.
allow_non_loopback = false
# Connections still sending their request, and as many being answered (two threads
# serve them all). Cut to fit an eighth of the daemon's open-file limit; when full, the
# oldest connection that has not finished its request is dropped.
max_connections = 64
# Seconds from a connection's accept to the last byte of its answer; half of it for the
# request head, however slowly it arrives.
request_timeout_s = 10

[image_trust]
# Signature verification of images, as CRI-O and Podman do it at pull, and again at
# CreateContainer for the pod's namespace; see docs/image-trust.md. Every file is checked
# at start-up (an invalid one stops the daemon, naming the key) and read again when it
# changes (an invalid edit refuses what it covers until fixed). The node's
# containers-policy.json(5); a missing file accepts every image (containers-common's
# default). A refusal answers FAILED_PRECONDITION ("SignatureValidationFailed: ...") and
# leaves nothing behind.
policy = "/etc/containers/policy.json"
# containers-registries.d(5) directory: where signatures are found (lookaside stores,
# use-sigstore-attachments). A missing directory configures no signature store.
registries_d = "/etc/containers/registries.d"
# <dir>/<namespace>.json replaces the node's policy for that namespace's pods, at pull
# and at CreateContainer (CRI-O's signature_policy_dir). A missing directory means none.
signature_policy_dir = "/etc/vmcri/policies"

[nri]
# Node Resource Interface plugins (off by default, as in containerd); see docs/nri.md.
enable = false
# The socket external plugins connect to (0600 in a 0700 directory; root only).
socket_path = "/var/run/nri/nri.sock"
# Pre-installed plugins vmcri starts itself (executables named NN-name), and their configs.
plugin_path = "/opt/nri/plugins"
plugin_config_path = "/etc/nri/conf.d"
# Seconds a plugin has to register, and to answer any call, before it is disconnected.
registration_timeout_s = 5
request_timeout_s = 2
# true: only pre-installed plugins; the socket is not opened.
disable_connections = false

# RuntimeClass handlers: [runtimes.<handler>] with a backend ("vm" or "runc")
# and that backend's options. The RuntimeClass object's `handler` names one.

[runtimes.vm]
backend = "vm"
# Host-network pods cannot be VMs; name a handler (e.g. "runc") to send them there.
host_network_handler = ""
[runtimes.vm.options]
# libvirt connection of the VMs.
libvirt_uri = "qemu:///system"
# QEMU machine type: "microvm" (smallest, fastest boot) or "q35".
machine = "q35"
# "auto" uses KVM only when /dev/kvm exists and the CPU has vmx or svm;
# "kvm" or "tcg" force one (TCG is software emulation: slow but real).
accel = "auto"
# Memory and vCPUs of a VM beyond its containers' limits (the pod overhead).
overhead_memory_mib = 160
overhead_vcpus = 1
# Used when no container of the pod has a memory limit.
default_memory_mib = 256
# A running VM grows (vCPU hotplug, virtio-mem) when its containers' limits need more,
# up to these; max_vcpus 0 means the host's CPUs (at most 8) plus overhead_vcpus. Under
# software emulation (TCG) vCPUs cannot be hotplugged: max_vcpus 0 there means no growth,
# and a larger value boots spare vCPUs (see ARCHITECTURE.md). max_memory_mib bounds pods
# without a pod-level memory limit (never beyond the host's MemTotal; 0: MemTotal); a pod
# with one never grows past it.
max_vcpus = 0
max_memory_mib = 4096
# The cgroup of VM pods kubelet sent no cgroup_parent for: <cgroup_parent>/<sandbox id>,
# made and removed by vmcri and limited to the VM's maximum memory plus
# qemu_memory_allowance_mib (QEMU's and virtiofsd's own memory).
cgroup_parent = "/vmcri"
qemu_memory_allowance_mib = 192
# File sharing into the VM: "auto" (virtiofs where virtiofsd exists, else 9p; 9p when
# templates are on, as a virtio-fs device cannot be saved), "9p", "virtiofs".
shared_fs = "auto"
# The agent channel: "auto" (vsock where /dev/vhost-vsock exists, else a virtio-serial
# port), "serial" or "vsock".
agent_transport = "auto"
# Guest kernel, initrd and root image; "" means guest/build in the source tree.
guest_dir = ""
# Seconds to wait for the guest agent after the VM starts, and for a clean shutdown.
boot_timeout_s = 60
shutdown_timeout_s = 10
# MiB of the pod's own disk (a sparse ext4 file under the root dir that the guest mounts
# and the host never does) that holds its containers' writable layers; a guest that fills
# it gets ENOSPC, the host nothing. 0: no disk, the layers stay in guest memory. Every pod's
# size is promised out of the root dir's free space (writable_layer_reserve_mib), so this
# also decides how many VM pods the disk admits.
writable_layer_mib = 2048
# MiB kept free on the root dir's file system when every pod's layer is full: a new pod's
# layer is sized down to what is left above it, and RunPodSandbox is refused
# (RESOURCE_EXHAUSTED) when less than 64 MiB is left.
writable_layer_reserve_mib = 1024
# VM templates: "auto" boots one VM per shape (image, memory, vCPUs) in the background,
# saves it, and starts pods by restoring it (a cold boot when that fails); "off".
template = "auto"
# Where templates are kept; "" means <root>/backends/vm/templates.
template_dir = ""
# A warm pool of restored, paused VMs per template shape a pod asked for: RunPodSandbox
# takes one (Ready in ~0.1 s under emulation) and the pool refills in the background, one
# VM at a time at the least CPU weight, never while a pod starts. Each idle VM holds its
# RAM as a pod does (vmcri doctor and the vmcri_vm_pool_* metrics show it). 0: no pool;
# needs templates.
pool_size = 0
# The OCI runtime the agent in the VM runs containers with: "crun" (a C program, a
# fraction of runc's start-up cost) or "runc"; the guest image carries both.
oci_runtime = "crun"

[runtimes.runc]
backend = "runc"
[runtimes.runc.options]
# The runc binary on the host.
runc = "runc"
# Bytes ExecSync keeps of each output stream, 1024 to 491520 (480 KiB: both streams
# come back in one agent frame); a larger value is refused at start-up.
exec_output_limit = 491520
"""
