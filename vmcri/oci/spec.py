"""Build an OCI runtime spec (runtime-spec 1.0.2, as runc 1.1 takes it). Pure: no I/O.

Inputs are the pod's and the container's CRI config (domain types), the image
config's ``config`` object, and a :class:`~vmcri.oci.context.SpecContext` with
the facts of the place the container runs (host paths, or guest paths for the
VM backend). The caller does the I/O beforehand: user names
(:func:`vmcri.oci.users.resolve_user`), device nodes and mount sources
(:mod:`vmcri.oci.hostpaths`), the localhost seccomp profile.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmcri.errors import InvalidArgument
from vmcri.model import ContainerConfig, NamespaceMode, PodConfig
from vmcri.oci import process as proc
from vmcri.oci.capabilities import container_capabilities
from vmcri.oci.context import SpecContext
from vmcri.oci.mounts import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    default_mounts,
    merge_mounts,
    pod_file_mounts,
    user_mounts,
)
from vmcri.oci.namespaces import container_namespaces
from vmcri.oci.own_userns import check_own_userns, own_userns_mounts
from vmcri.oci.resources import (
    DEFAULT_DEVICE_RULES,
    device_entries,
    linux_resources,
    oom_score_adj,
)
from vmcri.oci.seccomp import seccomp_for
from vmcri.oci.sysctls import normalise, validate_sysctls
from vmcri.oci.userns import (
    check_container_userns,
    check_mount_propagation,
    oci_mappings,
    pod_userns,
    uses_userns,
)

OCI_VERSION = "1.0.2"

Spec = dict[str, object]


def build_spec(
    pod: PodConfig,
    container: ContainerConfig,
    image_config: Mapping[str, object],
    ctx: SpecContext,
) -> Spec:
    """The config.json of ``container`` in ``pod``.

    Raises InvalidArgument naming the CRI field at fault, NotFound for a
    missing target container.
    """
    sec = container.security
    opts = pod_userns(pod.security.namespace_options, sec.namespace_options)
    if sec.privileged and not pod.security.privileged:
        raise InvalidArgument("security_context.privileged: the pod sandbox is not privileged")
    if not ctx.rootfs.startswith("/"):
        raise InvalidArgument("rootfs: must be an absolute path")
    host_network = opts.network is NamespaceMode.NODE
    host_ipc = opts.ipc is NamespaceMode.NODE
    validate_sysctls(pod.sysctls, host_network, host_ipc)
    check_container_userns(
        pod.security.namespace_options, opts, "security_context.namespace_options"
    )
    userns = uses_userns(opts)
    own_userns = userns and ctx.own_userns and not ctx.user_ns_path
    if own_userns:
        check_own_userns(opts)
    if userns:
        for i, mount in enumerate(container.mounts):
            check_mount_propagation(mount.propagation, f"mounts[{i}].propagation")

    caps, ambient = container_capabilities(
        sec.capabilities, sec.privileged, ctx.available_capabilities
    )
    user = ctx.user
    process: Spec = {
        "terminal": container.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": proc.supplemental_gids(
                user.gid,
                user.additional_gids,
                sec.supplemental_groups,
                sec.supplemental_groups_policy,
            ),
        },
        "args": proc.process_args(container, image_config),
        "env": proc.process_env(container, image_config, "" if host_network else ctx.hostname),
        "cwd": proc.working_dir(container, image_config),
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": ambient,
        },
        "noNewPrivileges": sec.no_new_privs,
    }
    rlimits = {r.type: (r.soft, r.hard) for r in ctx.rlimits}
    rlimits.update({r.type: (r.soft, r.hard) for r in container.rlimits})
    if rlimits:
        process["rlimits"] = [
            {"type": kind, "soft": soft, "hard": hard} for kind, (soft, hard) in rlimits.items()
        ]
    adj = oom_score_adj(container.resources.oom_score_adj, ctx.min_oom_score_adj)
    if adj is not None:
        process["oomScoreAdj"] = adj

    cri_mounts, rootfs_propagation = user_mounts(container.mounts, ctx)
    taken = {str(m["destination"]) for m in cri_mounts}
    own_ipc = opts.ipc is NamespaceMode.CONTAINER
    shm = ctx.shm_path if opts.ipc is not NamespaceMode.CONTAINER else ""
    extra = pod_file_mounts(ctx, sec.readonly_rootfs, taken) + cri_mounts
    mounts = merge_mounts(default_mounts(sec.privileged, own_ipc or not shm, shm), extra)
    if own_userns:
        mounts = own_userns_mounts(mounts, own_ipc)

    devices, device_rules = device_entries(ctx.devices)
    resources = linux_resources(container.resources, ctx.pids_limit)
    if sec.privileged:
        host_nodes, _ = device_entries(ctx.host_devices)
        own = {h["path"] for h in host_nodes}
        devices = host_nodes + [d for d in devices if d["path"] not in own]
        resources["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        resources["devices"] = [*DEFAULT_DEVICE_RULES, *device_rules]

    linux: Spec = {
        "namespaces": container_namespaces(opts, ctx),
        "resources": resources,
        "devices": devices,
    }
    if userns:
        linux["uidMappings"] = oci_mappings(opts.uid_mappings)
        linux["gidMappings"] = oci_mappings(opts.gid_mappings)
    if ctx.cgroups_path:
        linux["cgroupsPath"] = ctx.cgroups_path
    sysctls = normalise(pod.sysctls)
    if sysctls:
        linux["sysctl"] = sysctls
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation
    if not sec.privileged:
        linux["maskedPaths"] = list(
            DEFAULT_MASKED_PATHS if sec.masked_paths is None else sec.masked_paths
        )
        linux["readonlyPaths"] = list(
            DEFAULT_READONLY_PATHS if sec.readonly_paths is None else sec.readonly_paths
        )
    seccomp = seccomp_for(
        sec.seccomp, sec.privileged, caps, ctx.seccomp_localhost, "security_context.seccomp"
    )
    if seccomp is not None:
        linux["seccomp"] = seccomp

    spec: Spec = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": ctx.rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": _annotations(pod, container, ctx),
    }
    if not host_network and ctx.hostname and not own_userns:
        spec["hostname"] = ctx.hostname
    if container.hooks:
        spec["hooks"] = _hooks(container, ctx)
    return spec


def _hooks(container: ContainerConfig, ctx: SpecContext) -> dict[str, list[Spec]]:
    """OCI hooks by stage. A hook is a host binary: a VM pod's runtime cannot run one."""
    if ctx.in_vm:
        raise InvalidArgument(
            f"hooks: OCI hook {container.hooks[0].path!r} is a host binary; a VM pod's "
            "containers run inside the guest, where it does not exist"
        )
    out: dict[str, list[Spec]] = {}
    for hook in container.hooks:
        entry: Spec = {"path": hook.path}
        if hook.args:
            entry["args"] = list(hook.args)
        if hook.env:
            entry["env"] = list(hook.env)
        if hook.timeout is not None:
            entry["timeout"] = hook.timeout
        out.setdefault(hook.stage, []).append(entry)
    return out


def _annotations(pod: PodConfig, container: ContainerConfig, ctx: SpecContext) -> dict[str, str]:
    out = dict(container.annotations)
    meta = pod.metadata
    out.update(
        {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": container.metadata.name,
            "io.kubernetes.cri.sandbox-name": meta.name,
            "io.kubernetes.cri.sandbox-namespace": meta.namespace,
            "io.kubernetes.cri.sandbox-uid": meta.uid,
            "io.kubernetes.cri.image-name": container.image,
            "io.vmcri.isolation": "vm" if ctx.in_vm else "host",
        }
    )
    if ctx.sandbox_id:
        out["io.kubernetes.cri.sandbox-id"] = ctx.sandbox_id
    return out
