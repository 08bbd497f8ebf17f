"""A user-namespaced container's files in the guest: ID-mapped layers and volumes.

A VM pod with ``userns_options`` mode POD sends specs whose ``linux.namespaces`` has a
``user`` entry without a path and the pod's ``uidMappings``/``gidMappings``: the guest's
runc makes each container's user namespace (``vmcri/oci/own_userns.py`` says why not a
shared one). Its files must then look to it as the image says, root's owned by its root,
without a chown-ed copy of each layer: as on the runc handler (``vmcri/host/idmap.py``),
each read-only erofs layer is mounted once more, ID-mapped through a user namespace with
the pod's mappings, and overlayfs takes those clones as lower layers (Linux 5.19: the
guest's 6.1 can; overlayfs keeps private clones, so ours are detached right after). The
writable layer's top belongs to the pod's root; copy-up keeps a file's mapped owner and
a new file gets its creator's guest IDs, which the container sees as its own.

kubelet's volumes that live in the guest are ID-mapped binds where their file system can
be (the writable disk's ext4: disk emptyDirs), staged under the bundle and detached once
runc has bound them; on tmpfs (a memory emptyDir; the guest's 6.1 cannot ID-map tmpfs,
6.3 can) an emptyDir's top is given to the pod's root instead, which is all a new,
empty directory needs. Copied volumes (configMap, secret, projected, downwardAPI) are
not the agent's to map: the host sends their files with owners mapped through the pod's
range (``vmcri/handlers/vm/pod_volumes.py``). Nothing on the 9p share can be ID-mapped:
the host refuses such volumes.

The user namespace the mounts are mapped through is a forked child's, which unshares
one, is given the maps by the agent (privileged in the parent namespace, so any ranges
may be written) and waits until the agent is done with it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from vmcri.agent.guest.processes import Reaper
from vmcri.errors import HostCommandError, InvalidArgument

if TYPE_CHECKING:  # loaded with the first user-namespaced container, not at the agent's start
    from vmcri.model import IDMapping

MAX_RANGES = 340  # the kernel's limit on lines of uid_map / gid_map
MAX_ID = (1 << 32) - 1
HOLDER_WAIT_S = 10.0


class IdMaps(NamedTuple):
    uids: tuple[IDMapping, ...]
    gids: tuple[IDMapping, ...]

    def root(self) -> tuple[int, int] | None:
        """The guest (uid, gid) of the container's root; None if root is unmapped."""
        uid, gid = _outside(0, self.uids), _outside(0, self.gids)
        return None if uid is None or gid is None else (uid, gid)


class IdMapper(Protocol):
    """The kernel side: a user namespace with given maps, an ID-mapped clone of a tree."""

    def userns(self, maps: IdMaps) -> contextlib.AbstractContextManager[str]:
        """A path to a user namespace with ``maps``, valid inside the ``with``."""
        ...

    def map_tree(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        """Attach at ``target`` a clone of ``source`` seen through the namespace's maps.

        Raises FailedPrecondition when the file system cannot be ID-mapped.
        """
        ...


def spec_id_maps(spec: dict[str, object]) -> IdMaps | None:
    """The maps of a spec whose runtime makes the user namespace; None for any other spec
    (no user namespace, or one joined by path, as the runc handler's pods do).

    Raises InvalidArgument naming the field.
    """
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return None
    namespaces = linux.get("namespaces", [])
    if not isinstance(namespaces, list):
        raise InvalidArgument("oci_spec.linux.namespaces must be a list")
    own = any(
        isinstance(ns, dict) and ns.get("type") == "user" and not ns.get("path")
        for ns in namespaces
    )
    if not own:
        return None
    return IdMaps(
        _ranges(linux.get("uidMappings"), "uidMappings"),
        _ranges(linux.get("gidMappings"), "gidMappings"),
    )


def _ranges(raw: object, field: str) -> tuple[IDMapping, ...]:
    from vmcri.model import IDMapping

    where = f"oci_spec.linux.{field}"
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RANGES:
        raise InvalidArgument(f"{where}: a user namespace needs 1-{MAX_RANGES} mappings")
    out = []
    for i, entry in enumerate(raw):
        values = [entry.get(k) if isinstance(entry, dict) else None for k in _KEYS]
        ints = [v for v in values if type(v) is int]
        if len(ints) != len(_KEYS):
            raise InvalidArgument(f"{where}[{i}]: needs integer {', '.join(_KEYS)}")
        inside, outside, length = ints
        if min(inside, outside) < 0 or length <= 0 or max(inside, outside) + length > MAX_ID:
            raise InvalidArgument(f"{where}[{i}]: out of range")
        if outside == 0:
            raise InvalidArgument(f"{where}[{i}].hostID: must not map the guest's ID 0")
        out.append(IDMapping(host_id=outside, container_id=inside, length=length))
    return tuple(out)


_KEYS = ("containerID", "hostID", "size")


def _outside(inside: int, ranges: Sequence[IDMapping]) -> int | None:
    for r in ranges:
        if r.container_id <= inside < r.container_id + r.length:
            return r.host_id + inside - r.container_id
    return None


def mapped_owner(uid: int, gid: int, maps: IdMaps) -> tuple[int, int]:
    """The guest IDs the container sees as (``uid``, ``gid``); an unmapped one stays."""
    new_uid, new_gid = _outside(uid, maps.uids), _outside(gid, maps.gids)
    return (uid if new_uid is None else new_uid), (gid if new_gid is None else new_gid)


class KernelIdMapper:
    """:class:`IdMapper` with the real syscalls (``vmcri/host/mount_api.py``)."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    @contextlib.contextmanager
    def userns(self, maps: IdMaps) -> Iterator[str]:
        """Raises HostCommandError when the namespace cannot be made."""
        from vmcri.host.idmap import write_id_maps
        from vmcri.host.namespaces import CLONE_NEWUSER, unshare  # libc: before the fork

        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:  # pragma: no cover - the forked child; tested through the guest
            code = 1
            try:
                os.close(ready_r)
                os.close(hold_w)
                unshare(CLONE_NEWUSER)
                os.write(ready_w, b"1")
                os.read(hold_r, 1)  # until the agent closes its end
                code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(hold_r)
        waiter = self._reaper.watch(child)
        try:
            ready = _read_byte(ready_r, HOLDER_WAIT_S)
            if ready != b"1":
                raise HostCommandError("user namespace for ID-mapped mounts: cannot make it")
            write_id_maps(child, maps.uids, maps.gids)
            yield f"/proc/{child}/ns/user"
        finally:
            os.close(ready_r)
            os.close(hold_w)  # the child reads EOF and exits
            waiter.wait_or_kill(HOLDER_WAIT_S)

    def map_tree(self, source: str, target: str, userns_path: str, recursive: bool) -> None:
        from vmcri.host.idmap import idmapped_mount

        idmapped_mount(source, target, userns_path, recursive=recursive)


def _read_byte(fd: int, timeout: float) -> bytes:
    import select

    if not select.select([fd], [], [], timeout)[0]:
        return b""
    return os.read(fd, 1)
