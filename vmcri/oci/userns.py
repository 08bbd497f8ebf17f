"""User namespace options of a pod: checked once, then turned into OCI ID mappings. Pure.

Kubernetes (``hostUsers: false``) gives a pod mode POD with one UID and one
GID range, the same for every container of the pod; mode NODE (the default)
means the host's user namespace. The kernel's rules for a mapping are checked
here so that a bad request fails naming its field instead of deep in runc.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import IDMapping, MountPropagation, NamespaceMode, NamespaceOptions

MAX_ID = (1 << 32) - 1  # (uid_t)-1 is never a valid ID
MAX_RANGES = 340  # the kernel's limit on lines in uid_map / gid_map

Spec = dict[str, object]


def uses_userns(opts: NamespaceOptions) -> bool:
    return opts.userns_mode is NamespaceMode.POD


def check_pod_userns(opts: NamespaceOptions, field: str) -> None:
    """Refuse user namespace options a pod cannot have; ``field`` is the options' CRI path.

    Raises InvalidArgument naming ``<field>.userns_options...``.
    """
    where = f"{field}.userns_options"
    mode = opts.userns_mode
    if mode is NamespaceMode.NODE:
        if opts.uid_mappings or opts.gid_mappings:
            raise InvalidArgument(f"{where}: ID mappings need mode POD (mode is NODE)")
        return
    if mode is not NamespaceMode.POD:
        raise InvalidArgument(f"{where}.mode: {mode.name} is not valid; use POD or NODE")
    for name in ("network", "pid", "ipc"):
        if getattr(opts, name) is NamespaceMode.NODE:
            raise InvalidArgument(
                f"{field}.{name}: a pod with its own user namespace cannot use the host's {name}"
            )
    _check_ranges(opts.uid_mappings, f"{where}.uids")
    _check_ranges(opts.gid_mappings, f"{where}.gids")


def _check_ranges(mappings: Sequence[IDMapping], field: str) -> None:
    if not mappings:
        raise InvalidArgument(f"{field}: mode POD needs at least one mapping")
    if len(mappings) > MAX_RANGES:
        raise InvalidArgument(f"{field}: {len(mappings)} mappings, the kernel takes {MAX_RANGES}")
    for i, m in enumerate(mappings):
        if m.length <= 0:
            raise InvalidArgument(f"{field}[{i}].length: must be positive")
        if m.host_id < 0 or m.container_id < 0:
            raise InvalidArgument(f"{field}[{i}]: IDs must not be negative")
        if m.host_id + m.length > MAX_ID or m.container_id + m.length > MAX_ID:
            raise InvalidArgument(f"{field}[{i}]: range runs past the largest ID")
        if m.host_id == 0:
            # Mapping the host's root into a pod would undo what the namespace is for.
            raise InvalidArgument(f"{field}[{i}].host_id: must not map the host's ID 0")
    for what in ("host_id", "container_id"):
        starts = sorted((getattr(m, what), m.length) for m in mappings)
        for (start, length), (next_start, _) in itertools.pairwise(starts):
            if start + length > next_start:
                raise InvalidArgument(f"{field}: {what} ranges overlap")


def pod_userns(pod: NamespaceOptions, container: NamespaceOptions) -> NamespaceOptions:
    """The container's options with the pod's user namespace filled in where it names none.

    A container cannot leave its pod's user namespace; a client that sets it
    only on the pod (kubelet sets both) means the pod's.
    """
    unset = container.userns_mode is NamespaceMode.NODE and not (
        container.uid_mappings or container.gid_mappings
    )
    if uses_userns(pod) and unset:
        return dataclasses.replace(
            container,
            userns_mode=pod.userns_mode,
            uid_mappings=pod.uid_mappings,
            gid_mappings=pod.gid_mappings,
        )
    return container


def check_container_userns(pod: NamespaceOptions, container: NamespaceOptions, field: str) -> None:
    """A container must use its pod's user namespace exactly (see :func:`pod_userns`).

    Raises InvalidArgument naming ``<field>.userns_options``.
    """
    same = (
        pod.userns_mode is container.userns_mode
        and pod.uid_mappings == container.uid_mappings
        and pod.gid_mappings == container.gid_mappings
    )
    if not same:
        raise InvalidArgument(f"{field}.userns_options: must be the same as the pod sandbox's")


def check_mount_propagation(propagation: MountPropagation, field: str) -> None:
    """Mounts of a user-namespaced pod are ID-mapped clones, which see no later host mounts.

    Raises InvalidArgument naming ``field``.
    """
    if propagation is not MountPropagation.PRIVATE:
        raise InvalidArgument(
            f"{field}: {propagation.name} propagation is not available in a pod with its "
            "own user namespace"
        )


def pod_root(opts: NamespaceOptions) -> tuple[int, int] | None:
    """The host (uid, gid) of the pod's root, or None without a user namespace or mapping."""
    if not uses_userns(opts):
        return None
    uid = _host_id(0, opts.uid_mappings)
    gid = _host_id(0, opts.gid_mappings)
    return None if uid is None or gid is None else (uid, gid)


def owner_outside(uid: int, gid: int, opts: NamespaceOptions) -> tuple[int, int]:
    """The (uid, gid) outside the pod's user namespace of a file its containers should see
    owned by (``uid``, ``gid``); without a user namespace, or for an unmapped ID, as it is."""
    if not uses_userns(opts):
        return uid, gid
    new_uid, new_gid = _host_id(uid, opts.uid_mappings), _host_id(gid, opts.gid_mappings)
    return (uid if new_uid is None else new_uid), (gid if new_gid is None else new_gid)


def _host_id(container_id: int, mappings: Sequence[IDMapping]) -> int | None:
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.length:
            return m.host_id + container_id - m.container_id
    return None


def oci_mappings(mappings: Sequence[IDMapping]) -> list[Spec]:
    return [
        {"containerID": m.container_id, "hostID": m.host_id, "size": m.length} for m in mappings
    ]
