"""Look up user and group names in a container's rootfs (reads files; not pure).

Kept apart from :mod:`vmcri.oci.spec` so the spec builder stays free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmcri.errors import InvalidArgument
from vmcri.host.safe_open import read_regular_file
from vmcri.oci.context import ResolvedUser
from vmcri.oci.process import UserRequest

MAX_DB_BYTES = 4 << 20  # an /etc/passwd larger than this is not a real one


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _read_db(rootfs: str, path: str) -> list[list[str]]:
    # The rootfs is the container's (in a VM pod the guest's) to write: resolve inside it
    # in the kernel, never block on a FIFO, never follow a link out.
    try:
        data = read_regular_file(rootfs, path, MAX_DB_BYTES)
    except OSError:
        return []
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _passwd(rootfs: str) -> list[_Passwd]:
    out = []
    for row in _read_db(rootfs, "/etc/passwd"):
        if len(row) >= 4 and row[2].isdigit() and row[3].isdigit():
            out.append(_Passwd(row[0], int(row[2]), int(row[3])))
    return out


def _groups(rootfs: str) -> list[_Group]:
    out = []
    for row in _read_db(rootfs, "/etc/group"):
        if len(row) >= 3 and row[2].isdigit():
            members = tuple(m for m in (row[3].split(",") if len(row) > 3 else []) if m)
            out.append(_Group(row[0], int(row[2]), members))
    return out


def resolve_user(rootfs: str, request: UserRequest) -> ResolvedUser:
    """Turn a :class:`UserRequest` into numbers using the rootfs' passwd and group files.

    A numeric uid needs no passwd entry (its primary group is then 0, or the
    entry's); a name must exist. Additional groups are those of /etc/group that
    list the user's name. Raises InvalidArgument naming the field when a name
    is unknown.
    """
    users = _passwd(rootfs)
    name = request.user
    if not name:
        uid, gid, username = 0, 0, "root"
        entry = next((u for u in users if u.uid == 0), None)
        if entry is not None:
            gid, username = entry.gid, entry.name
    elif name.isdigit():
        uid = int(name)
        entry = next((u for u in users if u.uid == uid), None)
        gid = entry.gid if entry else 0
        username = entry.name if entry else ""
    else:
        entry = next((u for u in users if u.name == name), None)
        if entry is None:
            raise InvalidArgument(
                f"{request.field}: user {name!r} is not in the image's /etc/passwd"
            )
        uid, gid, username = entry.uid, entry.gid, entry.name
    groups = _groups(rootfs)
    if request.group is not None and request.group != "":
        if request.group.isdigit():
            gid = int(request.group)
        else:
            found = next((g for g in groups if g.name == request.group), None)
            if found is None:
                raise InvalidArgument(
                    f"{request.field}: group {request.group!r} is not in the image's /etc/group"
                )
            gid = found.gid
    additional = tuple(g.gid for g in groups if username and username in g.members and g.gid != gid)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=additional)
