"""Resolve the host side of kubelet's mounts and devices (reads the filesystem; not pure).

Run before :func:`vmcri.oci.spec.build_spec`, in the terms of the place the
runtime runs (the host for ``runc``, the guest for the agent).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import Device, Mount
from vmcri.oci.context import ResolvedDevice

MAX_PROFILE_BYTES = 1 << 20
KUBELET_SECCOMP_ROOT = "/var/lib/kubelet/seccomp"  # kubelet's default seccomp directory
_SECCOMP_FIELD = "config.linux.security_context.seccomp"


def resolve_mounts(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """The mounts with each host path's symlinks followed; image volumes pass through.

    A missing host path is an error (kubelet creates the directories it wants).
    Raises InvalidArgument naming ``mounts[i].host_path``.
    """
    out = []
    for i, mount in enumerate(mounts):
        if mount.image:
            out.append(mount)
            continue
        if not mount.host_path.startswith("/"):
            raise InvalidArgument(f"mounts[{i}].host_path: {mount.host_path!r} must be absolute")
        real = os.path.realpath(mount.host_path)
        if not os.path.exists(real):
            raise InvalidArgument(f"mounts[{i}].host_path: {mount.host_path} does not exist")
        out.append(dataclasses.replace(mount, host_path=real))
    return tuple(out)


def resolve_devices(devices: Sequence[Device]) -> tuple[ResolvedDevice, ...]:
    """Stat each device's host node. A directory adds every device node below it.

    Raises InvalidArgument naming ``devices[i].host_path`` for a missing path or
    a file that is not a device node.
    """
    out: list[ResolvedDevice] = []
    for i, device in enumerate(devices):
        path = os.path.realpath(device.host_path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InvalidArgument(
                f"devices[{i}].host_path: {device.host_path}: {exc.strerror}"
            ) from exc
        if stat.S_ISDIR(st.st_mode):
            for dirpath, _dirs, files in os.walk(path):
                for name in sorted(files):
                    node = os.path.join(dirpath, name)
                    rel = os.path.relpath(node, path)
                    found = _node(node, os.path.join(device.container_path, rel), device)
                    if found is not None:
                        out.append(found)
            continue
        found = _node(path, device.container_path, device)
        if found is None:
            raise InvalidArgument(f"devices[{i}].host_path: {device.host_path} is not a device")
        out.append(found)
    return tuple(out)


# Below /dev, not devices a privileged container should get copies of: its own
# pts and shm, the fd links, and runtime bookkeeping of other container managers.
_SKIPPED_DEV_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def host_devices(root: str = "/dev") -> tuple[ResolvedDevice, ...]:
    """Every device node below ``root``, for a privileged container (as containerd does).

    Symlinks (``/dev/stdin`` would name *our* stdin) and the console (the
    container gets its own) are left out, as are nodes gone while we looked.
    """
    out: list[ResolvedDevice] = []
    every = Device(container_path="", host_path="", permissions="rwm")
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DEV_DIRS)
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, "console") or os.path.islink(path):
                continue
            found = _node(path, path, every)
            if found is not None and (found.major, found.minor) != (0, 0):
                out.append(found)
    return tuple(out)


def _node(path: str, container_path: str, device: Device) -> ResolvedDevice | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return ResolvedDevice(
        container_path=container_path or path,
        host_path=path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        permissions=device.permissions,
        uid=st.st_uid,
        gid=st.st_gid,
    )


def load_localhost_profile(ref: str, profile_root: str) -> dict[str, object]:
    """Read a Localhost seccomp profile: ``ref`` is a host path, ``localhost/`` optional.

    kubelet is trusted and names profiles by absolute path (its own seccomp
    directory, or any other it was configured with), so any absolute path to a
    regular file is read, as containerd and CRI-O do; a relative ``ref`` (older
    clients) is taken below ``profile_root``. The file is opened non-blocking and
    checked to be regular before a byte is read (a FIFO would hang the caller),
    and read with a bound. Raises InvalidArgument naming the field.
    """
    field = f"{_SECCOMP_FIELD}.localhost_ref"
    path = ref.removeprefix("localhost/")
    if not path:
        raise InvalidArgument(f"{field}: must name a profile file")
    if not path.startswith("/"):
        path = os.path.join(profile_root, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidArgument(f"{field}: {ref!r}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{field}: {ref!r} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"{field}: {ref!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidArgument(f"{field}: {ref!r} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        profile = json.loads(data)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {ref!r} is not JSON: {exc}") from exc
    if not isinstance(profile, dict):
        raise InvalidArgument(f"{field}: {ref!r} is not a JSON object")
    return profile
