"""What the runtime checks of a container's config before any backend sees it, beyond
the edge's range checks (``cri/limits.py``), and where its log file goes."""

from __future__ import annotations

import os

from vmcri.errors import InvalidArgument
from vmcri.host.imagevolumes import check_sub_path
from vmcri.model import ContainerConfig, Resources
from vmcri.store.records import SandboxRecord


def container_log_path(sandbox: SandboxRecord, config: ContainerConfig) -> str:
    """The absolute log file path: the pod's log_directory joined with log_path."""
    if not config.log_path:
        return ""
    if not sandbox.config.log_directory:
        raise InvalidArgument("log_path: the sandbox has no log_directory to put it in")
    if os.path.isabs(config.log_path) or ".." in config.log_path.split("/"):
        raise InvalidArgument(
            f"config.log_path {config.log_path!r}: must be relative to the pod's "
            "log_directory and stay inside it"
        )
    return os.path.normpath(os.path.join(sandbox.config.log_directory, config.log_path))


def validate_resources(resources: Resources, where: str) -> None:
    """Raises InvalidArgument naming ``where.memory_swap_limit_in_bytes`` for -1.

    The edge (``cri/limits.py``) has already held every value to the kernel's range;
    -1 passes there, as the CRI lets kubelet ask for unlimited swap with it (cgroup v1),
    but vmcri does not offer it (the OCI spec generator refuses it too), so a pod's
    resources are refused here before any backend applies them.
    """
    if resources.memory_swap_limit_in_bytes < 0:
        raise InvalidArgument(f"{where}.memory_swap_limit_in_bytes: must not be negative")


def validate_container(config: ContainerConfig) -> None:
    """Checks that need no sandbox; raises InvalidArgument naming the field.

    Only what the edge (``cri/limits.py``, each value alone and only when set) cannot
    say: fields that must be set, rules across fields, and paths that must not reach
    /proc or /sys.
    """
    if not config.metadata.name:
        raise InvalidArgument("config.metadata.name: must not be empty")
    if not config.image:
        raise InvalidArgument("config.image.image: must not be empty")
    validate_resources(config.resources, "config.linux.resources")
    sec = config.security
    if sec.run_as_group is not None and sec.run_as_user is None and not sec.run_as_username:
        raise InvalidArgument(
            "config.linux.security_context.run_as_group: needs run_as_user or run_as_username"
        )
    for i, mount in enumerate(config.mounts):
        path = mount.container_path
        if not path.startswith("/"):
            raise InvalidArgument(f"config.mounts[{i}].container_path: must be absolute")
        normalized = os.path.normpath(path)
        if normalized in ("/proc", "/sys") or normalized.startswith(("/proc/", "/sys/")):
            raise InvalidArgument(
                f"config.mounts[{i}].container_path {path!r}: mounts into /proc or /sys "
                "are not allowed"
            )
        if not mount.host_path and not mount.image:
            raise InvalidArgument(f"config.mounts[{i}].host_path: must not be empty")
        if mount.image:
            check_sub_path(mount.image_sub_path, i)
        elif mount.image_sub_path:
            raise InvalidArgument(f"config.mounts[{i}].image_sub_path: needs image to be set")
