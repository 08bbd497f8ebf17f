"""Plugins' adjustments and updates, collected in plugin order; conflicts refused.

NRI's rule (pkg/adaptation/result.go): each thing a plugin may change has one owner.
When a second plugin changes what an earlier one already changed (the same environment
variable, annotation, mount destination, device path, rlimit, or the same resource field)
the whole call fails naming both plugins, rather than one silently winning. Hooks only
add, so they never conflict. A key or destination written with a leading "-" asks for
its removal, and owns it like a change does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from vmcri.api import nri_pb2
from vmcri.errors import PluginError

F = nri_pb2.Field
_RESOURCE_FIELDS = {
    "resources.memory.limit": F.MemLimit,
    "resources.memory.reservation": F.MemReservation,
    "resources.memory.swap": F.MemSwapLimit,
    "resources.memory.kernel": F.MemKernelLimit,
    "resources.memory.kernel_tcp": F.MemTCPLimit,
    "resources.memory.swappiness": F.MemSwappiness,
    "resources.memory.disable_oom_killer": F.MemDisableOomKiller,
    "resources.memory.use_hierarchy": F.MemUseHierarchy,
    "resources.cpu.shares": F.CPUShares,
    "resources.cpu.quota": F.CPUQuota,
    "resources.cpu.period": F.CPUPeriod,
    "resources.cpu.realtime_runtime": F.CPURealtimeRuntime,
    "resources.cpu.realtime_period": F.CPURealtimePeriod,
    "resources.cpu.cpus": F.CPUSetCPUs,
    "resources.cpu.mems": F.CPUSetMems,
    "resources.pids.limit": F.PidsLimit,
    "resources.hugepage_limits": F.HugepageLimits,
    "resources.blockio_class": F.BlockioClass,
    "resources.rdt_class": F.RdtClass,
}
"""Resource fields (as _set_fields names them) by NRI's Field, for validators' owners."""


@dataclass
class _Owners:
    who: dict[str, str] = field(default_factory=dict)
    # NRI's account of the same claims (Field -> plugin, or Field -> key -> plugin), as
    # validating plugins are told it.
    simple: dict[int, str] = field(default_factory=dict)
    compound: dict[int, dict[str, str]] = field(default_factory=dict)

    def claim(
        self, what: str, plugin: str, container: str, owned: int = 0, key: str | None = None
    ) -> None:
        earlier = self.who.get(what)
        if earlier is not None and earlier != plugin:
            raise PluginError(
                f"NRI plugins {earlier} and {plugin} both adjust {what} of container "
                f"{container or '(new)'}: conflicting adjustments refused"
            )
        self.who[what] = plugin
        if owned and key is not None:
            self.compound.setdefault(owned, {})[key] = plugin
        elif owned:
            self.simple[owned] = plugin

    def message(self) -> nri_pb2.FieldOwners:
        out = nri_pb2.FieldOwners(simple=self.simple)
        for owned, keys in self.compound.items():
            out.compound[owned].owners.update(keys)
        return out


def _key(name: str) -> str:
    return name[1:] if name.startswith("-") else name


def _set_fields(msg: Message, prefix: str) -> list[tuple[str, Message | object]]:
    """The fields set in a (resources) message, flattened to dotted names."""
    out: list[tuple[str, Message | object]] = []
    for desc, value in msg.ListFields():
        name = f"{prefix}.{desc.name}"
        if desc.message_type is not None and desc.message_type.name.startswith("Optional"):
            out.append((name, value))
        elif desc.message_type is not None and not isinstance(value, Iterable):
            if desc.message_type.GetOptions().map_entry:
                out.extend((f"{name}[{k}]", v) for k, v in value.items())
            else:
                out.extend(_set_fields(value, name))
        else:
            out.append((name, value))
    return out


def _merge_resources(
    into: nri_pb2.LinuxResources,
    new: nri_pb2.LinuxResources,
    owners: _Owners,
    plugin: str,
    container: str,
) -> None:
    for name, _ in _set_fields(new, "resources"):
        if name.startswith("resources.unified["):
            owners.claim(
                name, plugin, container, F.CgroupsUnified, name[len("resources.unified[") : -1]
            )
        else:
            owners.claim(name, plugin, container, _RESOURCE_FIELDS.get(name, 0))
    unified = dict(into.unified)
    hugepages = {h.page_size: h for h in into.hugepage_limits}
    into.MergeFrom(new)
    # MergeFrom appends repeated fields: keep one limit per page size (the claim above
    # already refused a second owner of any page size).
    for h in new.hugepage_limits:
        hugepages[h.page_size] = h
    del into.hugepage_limits[:]
    into.hugepage_limits.extend(hugepages.values())
    unified.update(new.unified)
    into.unified.clear()
    into.unified.update(unified)


@dataclass
class CreateResult:
    """The merged adjustment of the container being created, and updates to others."""

    container_id: str
    adjust: nri_pb2.ContainerAdjustment = field(default_factory=nri_pb2.ContainerAdjustment)
    updates: dict[str, nri_pb2.ContainerUpdate] = field(default_factory=dict)
    evictions: list[tuple[str, nri_pb2.ContainerEviction]] = field(default_factory=list)
    _owners: dict[str, _Owners] = field(default_factory=dict)

    def _owned(self, container_id: str) -> _Owners:
        return self._owners.setdefault(container_id, _Owners())

    def add_adjustment(self, plugin: str, adjust: nri_pb2.ContainerAdjustment) -> None:
        """Fold one plugin's adjustment in; raises PluginError on a conflict."""
        own = self._owned(self.container_id)
        cid = self.container_id
        out = self.adjust
        for key, value in adjust.annotations.items():
            own.claim(f"annotation {_key(key)!r}", plugin, cid, F.Annotations, _key(key))
            out.annotations[key] = value
        for mount in adjust.mounts:
            own.claim(
                f"mount {_key(mount.destination)!r}", plugin, cid, F.Mounts, _key(mount.destination)
            )
            out.mounts.append(mount)
        for env in adjust.env:
            own.claim(f"env {_key(env.key)!r}", plugin, cid, F.Env, _key(env.key))
            out.env.append(env)
        if adjust.HasField("hooks"):
            own.simple[F.OciHooks] = plugin  # hooks only add: owned, never in conflict
            out.hooks.MergeFrom(adjust.hooks)
        for rlimit in adjust.rlimits:
            own.claim(f"rlimit {rlimit.type}", plugin, cid, F.Rlimits, rlimit.type)
            out.rlimits.append(rlimit)
        for cdi in adjust.CDI_devices:
            own.claim(f"CDI device {cdi.name!r}", plugin, cid, F.CdiDevices, cdi.name)
            out.CDI_devices.append(cdi)
        if adjust.args:
            own.claim("args", plugin, cid, F.Args)
            del out.args[:]
            out.args.extend(adjust.args)
        if adjust.HasField("linux"):
            self._add_linux(plugin, adjust.linux, own)

    def _add_linux(
        self, plugin: str, linux: nri_pb2.LinuxContainerAdjustment, own: _Owners
    ) -> None:
        cid = self.container_id
        out = self.adjust.linux
        for device in linux.devices:
            own.claim(f"device {_key(device.path)!r}", plugin, cid, F.Devices, _key(device.path))
            out.devices.append(device)
        if linux.HasField("resources"):
            _merge_resources(out.resources, linux.resources, own, plugin, cid)
        if linux.cgroups_path:
            own.claim("cgroups path", plugin, cid, F.CgroupsPath)
            out.cgroups_path = linux.cgroups_path
        if linux.HasField("oom_score_adj"):
            own.claim("OOM score adjustment", plugin, cid, F.OomScoreAdj)
            out.oom_score_adj.CopyFrom(linux.oom_score_adj)
        if linux.HasField("io_priority"):
            own.claim("I/O priority", plugin, cid, F.IoPriority)
            out.io_priority.CopyFrom(linux.io_priority)
        # Fields of newer NRI versions (seccomp, namespaces, sysctls, scheduler, ...) arrive
        # unknown; keep them so that adjust.py refuses them instead of dropping them.
        probe = nri_pb2.LinuxContainerAdjustment()
        probe.CopyFrom(linux)
        probe.DiscardUnknownFields()
        if probe.ByteSize() != linux.ByteSize():
            own.claim("an adjustment vmcri does not know", plugin, cid)
            out.MergeFrom(linux)

    def add_updates(self, plugin: str, updates: list[nri_pb2.ContainerUpdate]) -> None:
        for update in updates:
            cid = update.container_id
            merged = self.updates.setdefault(cid, nri_pb2.ContainerUpdate(container_id=cid))
            merged.ignore_failure = merged.ignore_failure or update.ignore_failure
            if update.linux.HasField("resources"):
                _merge_resources(
                    merged.linux.resources, update.linux.resources, self._owned(cid), plugin, cid
                )

    def owners(self) -> nri_pb2.OwningPlugins:
        """Which plugin set what, per container, as NRI tells validating plugins."""
        out = nri_pb2.OwningPlugins()
        for cid, owned in self._owners.items():
            out.owners[cid].CopyFrom(owned.message())
        return out

    def add_evictions(self, plugin: str, evictions: list[nri_pb2.ContainerEviction]) -> None:
        self.evictions.extend((plugin, e) for e in evictions)
