"""linux.namespaces of a container from the CRI namespace options and the pod's pinned ones."""

from __future__ import annotations

from vmcri.errors import InvalidArgument, NotFound
from vmcri.model import NamespaceMode, NamespaceOptions
from vmcri.oci.context import SpecContext

Spec = dict[str, object]

_FIELD = "security_context.namespace_options"


def _join(kind: str, path: str, what: str) -> Spec:
    if not path:
        raise InvalidArgument(f"{_FIELD}.{what}: the pod has no {kind} namespace to join")
    return {"type": kind, "path": path}


def container_namespaces(opts: NamespaceOptions, ctx: SpecContext) -> list[Spec]:
    """The namespaces to create or join, in the order runc documents.

    The UTS namespace follows the network (host network means host name).
    Raises InvalidArgument naming the option for a mode that makes no sense for
    it, NotFound for a TARGET pid namespace that cannot be found. A pod's user
    namespace comes first: runc joins it before the others, which it owns.
    """
    out: list[Spec] = []
    if opts.userns_mode is NamespaceMode.POD and ctx.own_userns and not ctx.user_ns_path:
        out.append({"type": "user"})
    elif opts.userns_mode is NamespaceMode.POD:
        out.append(_join("user", ctx.user_ns_path, "userns_options"))
    elif opts.userns_mode is not NamespaceMode.NODE:
        raise InvalidArgument(f"{_FIELD}.userns_options.mode: {opts.userns_mode.name} is not valid")
    if opts.pid is NamespaceMode.POD:
        out.append(_join("pid", ctx.pid_ns_path, "pid"))
    elif opts.pid is NamespaceMode.CONTAINER:
        out.append({"type": "pid"})
    elif opts.pid is NamespaceMode.TARGET:
        if not opts.target_id:
            raise InvalidArgument(f"{_FIELD}.target_id: required with pid mode TARGET")
        if not ctx.target_pid_ns_path:
            raise NotFound(f"{_FIELD}.target_id: container {opts.target_id!r} is not running")
        out.append({"type": "pid", "path": ctx.target_pid_ns_path})
    elif opts.pid is not NamespaceMode.NODE:
        raise InvalidArgument(f"{_FIELD}.pid: unknown mode {opts.pid}")

    if opts.network is NamespaceMode.POD:
        out.append(_join("network", ctx.net_ns_path, "network"))
        out.append(_join("uts", ctx.uts_ns_path, "network"))
    elif opts.network is not NamespaceMode.NODE:
        raise InvalidArgument(f"{_FIELD}.network: mode {opts.network.name} is not supported")

    if opts.ipc is NamespaceMode.POD:
        out.append(_join("ipc", ctx.ipc_ns_path, "ipc"))
    elif opts.ipc is NamespaceMode.CONTAINER:
        out.append({"type": "ipc"})
    elif opts.ipc is not NamespaceMode.NODE:
        raise InvalidArgument(f"{_FIELD}.ipc: mode {opts.ipc.name} is not supported")

    out.append({"type": "mount"})
    if ctx.cgroup_namespace:
        out.append({"type": "cgroup"})
    return out
