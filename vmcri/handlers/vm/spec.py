"""The OCI spec of a container in a pod VM, in the guest's terms.

The same pure generator as the runc backend (``vmcri.oci.spec``) builds it;
only the facts differ: paths are guest paths below the pod share, and the pod's
network, IPC and UTS namespaces are the guest's own (those of its PID 1), since
the whole VM is the pod.

Its PID namespace is not: the agent is PID 1 of the guest's, beside the kernel
threads, and no container may see, signal or trace it. A pod that shares one
(NamespaceMode POD) joins the namespace the agent made for it at SetupSandbox
(``agent/guest/pod_pid.py``), whose PID 1 is the pod's infra process; CONTAINER
gives each container a fresh one; TARGET joins the target container's, found by
its init's guest pid, as the runc handler does on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vmcri.model import ImageInfo, Mount, NamespaceMode, PodConfig
from vmcri.oci import pod_files as files
from vmcri.oci import process
from vmcri.oci.context import SpecContext
from vmcri.oci.hostpaths import KUBELET_SECCOMP_ROOT, load_localhost_profile
from vmcri.oci.seccomp import LOCALHOST
from vmcri.oci.spec import Spec, build_spec
from vmcri.oci.users import resolve_user
from vmcri.store.records import ContainerRecord, SandboxRecord

GUEST_NS = "/proc/1/ns"


def pod_files(sandbox: SandboxRecord) -> tuple[str, bytes, bytes]:
    """Hostname, /etc/hosts and /etc/resolv.conf contents for the guest.

    The host name is the record's (the pod service gave a pod without one its
    name, cut to 63 bytes); /etc/hosts names the pod on its CNI addresses.
    Computed before the VM starts, so a bad DNS field fails fast. Raises
    InvalidArgument naming the DNS field at fault.
    """
    pod = sandbox.config
    hostname = pod.hostname
    ips = sandbox.network.addresses() if sandbox.network is not None else ()
    hosts = files.hosts_file(hostname, ips).encode()
    return hostname, hosts, files.resolv_conf(pod.dns).encode()


def shares_pid(pod: PodConfig) -> bool:
    """Whether the pod has one PID namespace for all its containers (shareProcessNamespace)."""
    return pod.security.namespace_options.pid is NamespaceMode.POD


def target_of(container: ContainerRecord) -> str:
    """The container whose PID namespace this one joins (pid mode TARGET), or ""."""
    opts = container.config.security.namespace_options
    return opts.target_id if opts.pid is NamespaceMode.TARGET else ""


def container_spec(
    sandbox: SandboxRecord,
    container: ContainerRecord,
    image: ImageInfo,
    host_rootfs: str,
    guest_rootfs: str,
    volumes: Mapping[int, Mount],
    image_volume_paths: Mapping[str, str] | None = None,
    target_pid: int = 0,
) -> Spec:
    """config.json for the agent. Raises InvalidArgument/Unimplemented naming the field,
    NotFound for a TARGET pid namespace whose container is not running.

    A Localhost seccomp profile is read here, on the host, and goes into the spec.
    ``target_pid`` is the guest pid of :func:`target_of`'s init (0: not running).

    ``volumes`` maps a host-path mount's index to the mount as the guest makes it
    (``volumes.py``: its guest path, and whether the guest's bind is read-only);
    ``image_volume_paths`` maps an image volume's reference to the guest path
    of its read-only view (sub-paths already resolved by the caller).
    """
    config = container.config
    mounts = tuple(m if m.image else volumes[i] for i, m in enumerate(config.mounts))
    config = dataclasses.replace(config, mounts=mounts)
    user = resolve_user(host_rootfs, process.user_request(config, image.config))
    sec = config.security
    seccomp = None
    if sec.seccomp.kind == LOCALHOST and not sec.privileged:
        # The profile is a host file (kubelet's): the host reads it, the guest gets its text.
        seccomp = load_localhost_profile(sec.seccomp.localhost_ref, KUBELET_SECCOMP_ROOT)
    runtime = sandbox.runtime
    ctx = SpecContext(
        rootfs=guest_rootfs,
        net_ns_path=f"{GUEST_NS}/net",
        ipc_ns_path=f"{GUEST_NS}/ipc",
        uts_ns_path=f"{GUEST_NS}/uts",
        # Never the guest's own (the agent is PID 1 there): the pod's, when it has one.
        pid_ns_path=runtime.get("pid_ns_path", ""),
        target_pid_ns_path=f"/proc/{target_pid}/ns/pid" if target_pid else "",
        hostname=runtime.get("hostname", ""),
        hostname_path=runtime.get("hostname_path", ""),
        hosts_path=runtime.get("hosts_path", ""),
        resolv_conf_path=runtime.get("resolv_conf_path", ""),
        user=user,
        cgroups_path=f"/vmcri/{container.id}",
        cgroup_namespace=True,
        image_volume_paths=dict(image_volume_paths or {}),
        seccomp_localhost=seccomp,
        in_vm=True,
        own_userns=True,
        sandbox_id=sandbox.id,
        container_id=container.id,
    )
    return build_spec(sandbox.config, config, image.config, ctx)


def stop_signal(container: ContainerRecord, image: ImageInfo) -> str:
    return process.stop_signal(container.config, image.config)
