"""User namespace ID maps and ID-mapped mounts, through the raw syscalls.

A pod with its own user namespace sees files through an ID-mapped mount: the
kernel shifts each file's owner by the namespace's mapping on the way in and
out, so image layers shared by every pod on the node need no chown-ed copy.
This is the mount API of Linux 5.12+ (``open_tree`` to clone a mount,
``mount_setattr`` with ``MOUNT_ATTR_IDMAP`` to attach a user namespace,
``move_mount`` to put the clone somewhere); overlayfs takes ID-mapped lower
layers since 5.19. runc 1.1 cannot make such mounts itself, so vmcri makes
them on the host and hands runc plain paths.

The raw calls are in :mod:`vmcri.host.mount_api`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmcri.errors import FailedPrecondition, HostCommandError
from vmcri.host import mount_api

if TYPE_CHECKING:  # the pod helper imports this module: keep its start-up light
    from vmcri.model import IDMapping


def id_map_text(mappings: Sequence[IDMapping]) -> str:
    """The contents of /proc/<pid>/uid_map (or gid_map): ``inside outside length`` lines."""
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings)


def write_id_maps(pid: int, uids: Sequence[IDMapping], gids: Sequence[IDMapping]) -> None:
    """Give the user namespace of ``pid`` its mappings (each file takes one write).

    Only a process privileged in the parent namespace may write several ranges
    or ranges it does not own itself: the daemon does it for the pod's helper.
    Raises HostCommandError.
    """
    for name, mappings in (("uid_map", uids), ("gid_map", gids)):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, id_map_text(mappings).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise HostCommandError(f"write {path}: {exc.strerror}", returncode=exc.errno) from exc


def idmapped_mount(source: str, target: str, userns_path: str, *, recursive: bool) -> None:
    """Mount ``source`` at ``target`` (which must exist) seen through ``userns_path``'s maps.

    A file owned by ID ``n`` on disk appears owned by whatever ``n`` maps to in
    that namespace, so a pod's root (host ID 100000, say) owns what the image
    says root owns. ``recursive`` takes the mounts below ``source`` along.
    Raises FailedPrecondition when the file system or kernel cannot do it (the
    message says which), HostCommandError for anything else.
    """
    try:
        tree = mount_api.clone_tree(source, recursive=recursive)
    except OSError as exc:
        raise _error("open_tree", source, exc) from exc
    try:
        userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            mount_api.set_attributes(
                tree, recursive=recursive, attr_set=mount_api.MOUNT_ATTR_IDMAP, userns_fd=userns
            )
        except OSError as exc:
            raise _error("mount_setattr", source, exc) from exc
        finally:
            os.close(userns)
        try:
            mount_api.attach(tree, target)
        except OSError as exc:
            raise _error("move_mount", target, exc) from exc
    finally:
        os.close(tree)


def _error(call: str, path: str, exc: OSError) -> Exception:
    if exc.errno == errno.ENOSYS:
        return FailedPrecondition(
            f"{path}: this kernel has no {call}(2); user namespaces need Linux 5.19 or newer"
        )
    if call == "mount_setattr" and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
        return FailedPrecondition(
            f"{path}: its file system cannot be ID-mapped, which a pod with its own user "
            "namespace needs for every mount"
        )
    return HostCommandError(f"{call} {path}: {exc.strerror}", returncode=exc.errno or 0)
