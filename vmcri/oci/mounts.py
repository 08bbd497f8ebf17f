"""The mounts of a container: the runtime's defaults, the pod's files, kubelet's mounts."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import Mount, MountPropagation
from vmcri.oci.context import SpecContext

# Masked and read-only /proc and /sys paths of an unprivileged container (containerd's lists).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

Spec = dict[str, object]

_PROPAGATION = {
    MountPropagation.PRIVATE: "rprivate",
    MountPropagation.HOST_TO_CONTAINER: "rslave",
    MountPropagation.BIDIRECTIONAL: "rshared",
}

# Kernel filesystems a bind mount must not cover: the runtime owns them.
_FORBIDDEN_TARGETS = ("/proc", "/sys")


def default_mounts(privileged: bool, own_ipc: bool, shm_path: str) -> list[Spec]:
    """proc, /dev, devpts, /dev/shm, mqueue, sysfs and cgroup, as runc expects them.

    ``shm_path`` is a directory bind-mounted at /dev/shm (the pod's shared one,
    or the host's for host IPC); without it, and with a private IPC namespace,
    the container gets its own tmpfs.
    """
    ro = [] if privileged else ["ro"]
    mounts: list[Spec] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
    ]
    if shm_path:
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "bind",
                "source": shm_path,
                "options": ["rbind", "rprivate", "rw"],
            }
        )
    elif own_ipc:
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            }
        )
    mounts += [
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", *ro],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", *ro],
        },
    ]
    return mounts


def pod_file_mounts(ctx: SpecContext, readonly: bool, taken: set[str]) -> list[Spec]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf from the pod, unless kubelet mounts them."""
    mode = "ro" if readonly else "rw"
    out: list[Spec] = []
    for dest, source in (
        ("/etc/hostname", ctx.hostname_path),
        ("/etc/hosts", ctx.hosts_path),
        ("/etc/resolv.conf", ctx.resolv_conf_path),
    ):
        if source and dest not in taken:
            out.append(
                {
                    "destination": dest,
                    "type": "bind",
                    "source": source,
                    "options": ["rbind", "rprivate", mode],
                }
            )
    return out


def _check_target(path: str, field: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"{field}: {path!r} must be an absolute path")
    clean = posixpath.normpath(path)
    for forbidden in _FORBIDDEN_TARGETS:
        if clean == forbidden or clean.startswith(forbidden + "/"):
            raise InvalidArgument(f"{field}: mounting over {clean} is not allowed")
    return clean


def _image_source(mount: Mount, images: Mapping[str, str], i: int) -> str:
    root = images.get(mount.image)
    if root is None:
        raise InvalidArgument(f"mounts[{i}].image: image {mount.image!r} is not available")
    if not mount.image_sub_path:
        return root
    sub = posixpath.normpath(mount.image_sub_path)
    if sub.startswith("/") or sub == ".." or sub.startswith("../"):
        raise InvalidArgument(
            f"mounts[{i}].image_sub_path: {mount.image_sub_path!r} must stay inside the image"
        )
    return posixpath.join(root, sub)


def check_recursive_read_only(mount: Mount, i: int, supported: bool) -> None:
    """A recursive read-only mount as the CRI allows it (kubelet sends it read-only and
    private); raises InvalidArgument naming ``mounts[i].recursive_read_only``."""
    if not mount.recursive_read_only:
        return
    if not mount.readonly:
        raise InvalidArgument(f"mounts[{i}].recursive_read_only: needs readonly to be set")
    if mount.propagation is not MountPropagation.PRIVATE:
        raise InvalidArgument(f"mounts[{i}].recursive_read_only: needs propagation PRIVATE")
    if not supported:
        raise InvalidArgument(
            f"mounts[{i}].recursive_read_only: not supported by this kernel or runtime"
        )


def user_mounts(mounts: Sequence[Mount], ctx: SpecContext) -> tuple[list[Spec], str]:
    """kubelet's mounts as OCI bind mounts, and the rootfs propagation they need.

    Host paths must already be resolved (symlinks followed, existence checked)
    by :func:`vmcri.oci.hostpaths.resolve_mounts`. Raises InvalidArgument naming
    ``mounts[i].<field>`` for a target in /proc or /sys, a relative path,
    duplicate targets, or a recursive read-only mount that cannot be honoured.
    """
    out: list[Spec] = []
    seen: set[str] = set()
    rootfs_propagation = ""
    for i, mount in enumerate(mounts):
        target = _check_target(mount.container_path, f"mounts[{i}].container_path")
        if target in seen:
            raise InvalidArgument(f"mounts[{i}].container_path: {target} is mounted twice")
        seen.add(target)
        if mount.image:
            source = _image_source(mount, ctx.image_volume_paths, i)
            readonly = True
        else:
            if not mount.host_path.startswith("/"):
                raise InvalidArgument(
                    f"mounts[{i}].host_path: {mount.host_path!r} must be an absolute path"
                )
            source = mount.host_path
            readonly = mount.readonly
        propagation = _PROPAGATION.get(mount.propagation)
        if propagation is None:
            raise InvalidArgument(f"mounts[{i}].propagation: unknown value {mount.propagation}")
        options = ["rbind", propagation]
        if mount.recursive_read_only:
            check_recursive_read_only(mount, i, ctx.recursive_read_only_supported)
            options.append("rro")
        else:
            options.append("ro" if readonly else "rw")
        if mount.propagation is MountPropagation.BIDIRECTIONAL:
            rootfs_propagation = "rshared"
        elif mount.propagation is MountPropagation.HOST_TO_CONTAINER and not rootfs_propagation:
            rootfs_propagation = "rslave"
        out.append({"destination": target, "type": "bind", "source": source, "options": options})
    return out, rootfs_propagation


def merge_mounts(defaults: list[Spec], extra: list[Spec]) -> list[Spec]:
    """Defaults first, minus those a later mount replaces at the same destination."""
    targets = {m["destination"] for m in extra}
    return [m for m in defaults if m["destination"] not in targets] + extra
