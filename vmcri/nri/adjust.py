"""A merged NRI adjustment applied to a container's description, once, for both handlers.

The result is the ContainerConfig both backends build their spec from, so an adjusted
environment, mount, rlimit, annotation or resource is the same thing on runc and in a
VM. What an adjustment cannot mean is refused with PluginError naming it, never dropped:

- everywhere: CDI devices (vmcri has no CDI registry), a cgroups path (vmcri places each
  container's cgroup itself), I/O priority, mounts other than bind mounts, resource
  fields vmcri does not apply (block I/O and RDT classes, memory reservation, kernel
  memory, swappiness, device cgroup rules), and fields of newer NRI versions;
- in a VM pod (``in_guest``): device nodes (a host device the VM does not have) and OCI
  hooks (host binaries, absent from the guest). Bind mounts go through the VM backend's
  volume sharing with the same checks as a CRI mount of that host path;
- for a container RestorePod restores (:func:`refuse_for_restore`): everything that shapes
  a process as it is started, since the restored process is the saved one.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable

from vmcri.api import nri_pb2
from vmcri.errors import PluginError
from vmcri.model import (
    ContainerConfig,
    Device,
    KeyValue,
    Mount,
    MountPropagation,
    OciHook,
    Resources,
    Rlimit,
)

HOOK_STAGES = (
    ("prestart", "prestart"),
    ("create_runtime", "createRuntime"),
    ("create_container", "createContainer"),
    ("start_container", "startContainer"),
    ("poststart", "poststart"),
    ("poststop", "poststop"),
)


def _refuse(what: str) -> PluginError:
    return PluginError(f"NRI adjustment refused: {what}")


def _removal(name: str) -> tuple[bool, str]:
    return (True, name[1:]) if name.startswith("-") else (False, name)


def resources_from(r: nri_pb2.LinuxResources, base: Resources) -> Resources:
    """``base`` with what ``r`` sets; raises PluginError for what vmcri does not apply."""
    mem, cpu = r.memory, r.cpu
    for name in ("reservation", "kernel", "kernel_tcp", "swappiness", "disable_oom_killer"):
        if mem.HasField(name):
            raise _refuse(f"memory {name} is not applied by vmcri")
    if cpu.HasField("realtime_runtime") or cpu.HasField("realtime_period"):
        raise _refuse("realtime CPU scheduling is not applied by vmcri")
    if r.HasField("blockio_class") or r.HasField("rdt_class") or len(r.devices):
        raise _refuse("block I/O class, RDT class and device cgroup rules are not applied")
    values: dict[str, int] = {}
    if mem.HasField("limit"):
        values["memory_limit_in_bytes"] = mem.limit.value
    if mem.HasField("swap"):
        values["memory_swap_limit_in_bytes"] = mem.swap.value
    if cpu.HasField("shares"):
        values["cpu_shares"] = cpu.shares.value
    if cpu.HasField("quota"):
        values["cpu_quota"] = cpu.quota.value
    if cpu.HasField("period"):
        values["cpu_period"] = cpu.period.value
    out = dataclasses.replace(base, **values)  # type: ignore[arg-type]
    if cpu.cpus:
        out = dataclasses.replace(out, cpuset_cpus=cpu.cpus)
    if cpu.mems:
        out = dataclasses.replace(out, cpuset_mems=cpu.mems)
    if len(r.hugepage_limits):
        pages = dict(out.hugepage_limits)
        pages.update({h.page_size: h.limit for h in r.hugepage_limits})
        out = dataclasses.replace(out, hugepage_limits=tuple(sorted(pages.items())))
    unified = dict(out.unified)
    unified.update(r.unified)
    if r.HasField("pids") and r.pids.limit:
        unified["pids.max"] = str(r.pids.limit)  # cgroup v2, on the host and in the guest
    if unified != dict(out.unified):
        out = dataclasses.replace(out, unified=tuple(sorted(unified.items())))
    return out


def apply(
    config: ContainerConfig, adjust: nri_pb2.ContainerAdjustment, in_guest: bool
) -> ContainerConfig:
    """``config`` adjusted; raises PluginError naming what cannot be applied."""
    if not adjust.ByteSize():
        return config
    if len(adjust.CDI_devices):
        raise _refuse(f"CDI device {adjust.CDI_devices[0].name!r}: vmcri has no CDI registry")
    annotations = dict(config.annotations)
    for key, value in adjust.annotations.items():
        removed, key = _removal(key)
        if removed:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    envs = {e.key: e.value for e in config.envs}
    for kv in adjust.env:
        removed, key = _removal(kv.key)
        if removed:
            envs.pop(key, None)
        else:
            envs[key] = kv.value
    out = dataclasses.replace(
        config,
        annotations=annotations,
        envs=tuple(KeyValue(k, v) for k, v in envs.items()),
        mounts=_mounts(config.mounts, adjust.mounts),
        rlimits=_rlimits(config.rlimits, adjust.rlimits),
        hooks=config.hooks + _hooks(adjust.hooks, in_guest),
    )
    if adjust.args:
        out = dataclasses.replace(out, command=tuple(adjust.args), args=())
    if adjust.HasField("linux"):
        out = _linux(out, adjust.linux, in_guest)
    return out


def _mounts(mounts: tuple[Mount, ...], adjusted: Iterable[nri_pb2.Mount]) -> tuple[Mount, ...]:
    out = list(mounts)
    for m in adjusted:
        removed, destination = _removal(m.destination)
        out = [
            x for x in out if os.path.normpath(x.container_path) != os.path.normpath(destination)
        ]
        if removed:
            continue
        options = set(m.options)
        if m.type not in ("", "bind") and not options & {"bind", "rbind"}:
            raise _refuse(f"mount {destination!r} of type {m.type!r}: only bind mounts apply")
        if not destination.startswith("/") or not m.source.startswith("/"):
            raise _refuse(f"mount {destination!r}: source and destination must be absolute")
        propagation = MountPropagation.PRIVATE
        if options & {"rslave", "slave"}:
            propagation = MountPropagation.HOST_TO_CONTAINER
        elif options & {"rshared", "shared"}:
            propagation = MountPropagation.BIDIRECTIONAL
        out.append(
            Mount(
                container_path=destination,
                host_path=m.source,
                readonly="ro" in options,
                propagation=propagation,
            )
        )
    return tuple(out)


def _rlimits(
    rlimits: tuple[Rlimit, ...], adjusted: Iterable[nri_pb2.POSIXRlimit]
) -> tuple[Rlimit, ...]:
    out = {r.type: r for r in rlimits}
    for r in adjusted:
        if not r.type.startswith("RLIMIT_") or r.soft > r.hard:
            raise _refuse(f"rlimit {r.type[:32]!r}: not an RLIMIT_* with soft <= hard")
        out[r.type] = Rlimit(r.type, r.soft, r.hard)
    return tuple(out.values())


def _hooks(hooks: nri_pb2.Hooks, in_guest: bool) -> tuple[OciHook, ...]:
    out = []
    for field, stage in HOOK_STAGES:
        for h in getattr(hooks, field):
            if in_guest:
                raise _refuse(
                    f"OCI hook {h.path!r}: a host binary; a VM pod's containers are created "
                    "inside the guest, where it does not exist"
                )
            if not h.path.startswith("/"):
                raise _refuse(f"OCI hook {h.path!r}: the path must be absolute")
            timeout = h.timeout.value if h.HasField("timeout") else None
            out.append(OciHook(stage, h.path, tuple(h.args), tuple(h.env), timeout))
    return tuple(out)


def _linux(
    config: ContainerConfig, linux: nri_pb2.LinuxContainerAdjustment, in_guest: bool
) -> ContainerConfig:
    probe = nri_pb2.LinuxContainerAdjustment()
    probe.CopyFrom(linux)
    probe.DiscardUnknownFields()
    if probe.ByteSize() != linux.ByteSize():
        raise _refuse("a Linux adjustment vmcri does not know (seccomp, namespaces, sysctls...)")
    if linux.cgroups_path:
        raise _refuse("cgroups path: vmcri places each container's cgroup itself")
    if linux.HasField("io_priority"):
        raise _refuse("I/O priority is not applied by vmcri")
    devices = list(config.devices)
    for d in linux.devices:
        removed, path = _removal(d.path)
        devices = [x for x in devices if x.container_path != path]
        if removed:
            continue
        if in_guest:
            raise _refuse(
                f"device {path!r}: a host device node; a VM pod only has the guest's devices"
            )
        devices.append(Device(container_path=path, host_path=_host_node(d, path)))
    resources = config.resources
    if linux.HasField("resources"):
        resources = resources_from(linux.resources, resources)
    if linux.HasField("oom_score_adj"):
        resources = dataclasses.replace(resources, oom_score_adj=linux.oom_score_adj.value)
    return dataclasses.replace(config, devices=tuple(devices), resources=resources)


def _host_node(d: nri_pb2.LinuxDevice, path: str) -> str:
    """The host's device node at ``path``, which must be the device the plugin named."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _refuse(f"device {path!r}: no such device node on the host ({exc.strerror})") from exc
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
    if (
        not kind
        or (d.type and d.type != kind)
        or (d.major, d.minor) != (os.major(st.st_rdev), os.minor(st.st_rdev))
    ):
        raise _refuse(f"device {path!r}: the host node is not {d.type} {d.major}:{d.minor}")
    return path


RESTORE_HOLDS = frozenset({"annotations"})
"""Adjustment fields that hold for a restored container: what the record says of it."""
LINUX_RESTORE_HOLDS = frozenset({"resources"})
"""Its Linux fields that hold: its resources (the restored container's cgroup)."""


def refuse_for_restore(adjust: nri_pb2.ContainerAdjustment) -> None:
    """Raise PluginError naming the first field that cannot reach a restored container.

    A restored container's process is the checkpointed one, its memory and its mount
    namespace the saved ones: an environment, arguments, mounts, devices, hooks, rlimits
    or OOM score given now would describe a process that never runs. Annotations (the
    record's) and Linux resources (its cgroup, set as for any container) hold.
    """
    for desc, _ in adjust.ListFields():
        if desc.name == "linux":
            for linux_desc, _ in adjust.linux.ListFields():
                if linux_desc.name not in LINUX_RESTORE_HOLDS:
                    raise _refuse(
                        f"linux.{linux_desc.name} of a restored container (its process is "
                        "the checkpointed one; only annotations and resources apply)"
                    )
        elif desc.name not in RESTORE_HOLDS:
            raise _refuse(
                f"{desc.name} of a restored container (its process is the checkpointed "
                "one; only annotations and resources apply)"
            )
