"""What a container runs and as whom: Kubernetes' merge of the CRI config with the image.

Kubernetes semantics (the same as containerd and CRI-O):

* ``command`` replaces the image ``Entrypoint`` and drops its ``Cmd``;
  ``args`` alone replaces ``Cmd`` and keeps ``Entrypoint``.
* Environment: a default ``PATH`` and ``HOSTNAME``, then the image ``Env``, then the
  CRI ``envs``; a later entry replaces an earlier one with the same name.
* The user is ``run_as_username`` or ``run_as_user``, else the image ``User``;
  ``run_as_group`` overrides the group but needs a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vmcri.errors import InvalidArgument
from vmcri.model import ContainerConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _strings(image_config: Mapping[str, object], key: str) -> list[str]:
    """A list-of-strings field of the image config; absent or null is empty."""
    value = image_config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"image config {key}: must be a list of strings")
    return list(value)


def _string(image_config: Mapping[str, object], key: str) -> str:
    value = image_config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"image config {key}: must be a string")
    return value


def process_args(config: ContainerConfig, image_config: Mapping[str, object]) -> list[str]:
    """The argv of the container process.

    Raises InvalidArgument when nothing is left to run or the image config is malformed.
    """
    if config.command:
        args = [*config.command, *config.args]
    elif config.args:
        args = [*_strings(image_config, "Entrypoint"), *config.args]
    else:
        args = [*_strings(image_config, "Entrypoint"), *_strings(image_config, "Cmd")]
    if not args:
        raise InvalidArgument(
            "command: no command specified and the image has no Entrypoint or Cmd"
        )
    return args


def process_env(
    config: ContainerConfig, image_config: Mapping[str, object], hostname: str
) -> list[str]:
    """The environment as ``NAME=value`` strings, in first-definition order.

    Raises InvalidArgument for an empty or malformed variable name.
    """
    merged: dict[str, str] = {"PATH": DEFAULT_PATH}
    if hostname:
        merged["HOSTNAME"] = hostname
    for entry in _strings(image_config, "Env"):
        name, sep, value = entry.partition("=")
        if not name:
            raise InvalidArgument(f"image config Env: malformed entry {entry!r}")
        merged[name] = value if sep else ""
    for i, kv in enumerate(config.envs):
        if not kv.key or "=" in kv.key or "\x00" in kv.key:
            raise InvalidArgument(f"envs[{i}].key: invalid environment variable name {kv.key!r}")
        merged[kv.key] = kv.value
    return [f"{k}={v}" for k, v in merged.items()]


def working_dir(config: ContainerConfig, image_config: Mapping[str, object]) -> str:
    """The process's cwd: the CRI value, else the image's, else ``/``.

    Raises InvalidArgument for a relative directory.
    """
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise InvalidArgument(f"working_dir: {config.working_dir!r} must be an absolute path")
        return config.working_dir
    image_dir = _string(image_config, "WorkingDir")
    if not image_dir:
        return "/"
    if not image_dir.startswith("/"):
        raise InvalidArgument(f"image config WorkingDir: {image_dir!r} must be absolute")
    return image_dir


@dataclass(frozen=True)
class UserRequest:
    """Who to run as, before names are looked up in the rootfs.

    ``user`` is a name or a decimal uid ("" means root); ``group`` likewise,
    ``None`` meaning the user's primary group. ``field`` names where the user
    came from, for error messages.
    """

    user: str
    group: str | None
    field: str


def user_request(config: ContainerConfig, image_config: Mapping[str, object]) -> UserRequest:
    """Pick the identity to resolve; raises InvalidArgument for a group without a user."""
    sec = config.security
    group = None if sec.run_as_group is None else str(sec.run_as_group)
    if sec.run_as_group is not None and sec.run_as_group < 0:
        raise InvalidArgument("security_context.run_as_group: must not be negative")
    if sec.run_as_username:
        return UserRequest(sec.run_as_username, group, "security_context.run_as_username")
    if sec.run_as_user is not None:
        if sec.run_as_user < 0:
            raise InvalidArgument("security_context.run_as_user: must not be negative")
        return UserRequest(str(sec.run_as_user), group, "security_context.run_as_user")
    if group is not None:
        raise InvalidArgument(
            "security_context.run_as_group: a group is specified without "
            "run_as_user or run_as_username"
        )
    image_user = _string(image_config, "User")
    name, sep, image_group = image_user.partition(":")
    return UserRequest(name, image_group if sep else None, "image config User")


def stop_signal(config: ContainerConfig, image_config: Mapping[str, object]) -> str:
    """The signal that asks the container to stop: the CRI value, the image's, or SIGTERM."""
    return config.stop_signal or _string(image_config, "StopSignal") or "SIGTERM"


def supplemental_gids(
    primary_gid: int,
    additional_gids: Sequence[int],
    requested: Sequence[int],
    policy: int,
) -> list[int]:
    """The process's additional groups under SupplementalGroupsPolicy Merge (0) or Strict (1).

    Raises InvalidArgument for an unknown policy or a negative gid.
    """
    if policy not in (0, 1):
        raise InvalidArgument(
            f"security_context.supplemental_groups_policy: unknown policy {policy}"
        )
    for i, gid in enumerate(requested):
        if gid < 0:
            raise InvalidArgument(f"security_context.supplemental_groups[{i}]: negative gid")
    gids: list[int] = [primary_gid]
    sources = [requested] if policy == 1 else [additional_gids, requested]
    for source in sources:
        for gid in source:
            if gid not in gids:
                gids.append(gid)
    return gids
