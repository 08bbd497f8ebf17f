"""Checks of single wire values, each raising InvalidArgument (NotFound for IDs) naming the field.

Every check has the signature ``check(value, where)``: ``where`` is the field's path in
the request (``config.linux.resources.cpu_quota``). :mod:`vmcri.cri.limits` attaches
them to proto fields; :mod:`vmcri.cri.validate` calls them while it walks a request.
A check sees only values that are set: proto3 leaves 0 and "" out of ``ListFields``,
so "unset" needs no case here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from vmcri.errors import InvalidArgument, NotFound
from vmcri.ids import could_name

Check = Callable[[Any, str], None]

# RFC 1123 labels joined by dots; underscores as kubelet's own hostnames allow.
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
# A printable word: no whitespace or control characters (resolv.conf, /etc/hosts lines).
_WORD_RE = re.compile(r"^[!-~\u00a0-\U0010ffff]+$")
# cpuset list syntax (cpuset(7)): "0-3,5,7-9".
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
# A cgroup v2 interface file: "<controller>.<name>", never a path.
_CGROUP_FILE_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")
_PAGE_SIZE_RE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|TB|PB)$")
_DEVICE_PERMISSIONS_RE = re.compile(r"^[rwm]{1,3}$")
_CAPABILITY_RE = re.compile(r"^[A-Za-z_]{1,64}$")


def in_range(low: int, high: int, *, also: tuple[int, ...] = ()) -> Check:
    """A number in ``[low, high]`` or one of ``also`` (e.g. -1 for "unlimited")."""
    allowed = "".join(f" or {v}" for v in also)

    def check(value: int, where: str) -> None:
        if value in also or low <= value <= high:
            return
        unset = "0 (unset) or " if low > 0 else ""
        raise InvalidArgument(
            f"{where}: {value} is out of range; must be {unset}between {low} and {high}{allowed}"
        )

    return check


def lookup_id(value: str, where: str) -> None:
    """An ID the request looks up (vmcri IDs or a prefix of one, as the store takes).

    What cannot be one names nothing: NOT_FOUND, as for a well-formed unknown ID, so
    that a client sees the same answer for both and nothing further looks for it.
    """
    if not could_name(value):
        raise NotFound(f"{where}: {_show(value)} names nothing (IDs are 64 lowercase hex digits)")


def id_prefix(value: str, where: str) -> None:
    if not could_name(value):
        raise InvalidArgument(f"{where}: {_show(value)} is not an ID or an ID prefix")


def absolute_path(value: str, where: str) -> None:
    if not value.startswith("/"):
        raise InvalidArgument(f"{where}: {_show(value)} must be an absolute path")


def relative_path(value: str, where: str) -> None:
    if value.startswith("/") or ".." in value.split("/"):
        raise InvalidArgument(f"{where}: {_show(value)} must be a relative path inside its dir")


def no_parent_refs(value: str, where: str) -> None:
    if ".." in value.split("/"):
        raise InvalidArgument(f"{where}: {_show(value)} must not contain '..'")


def ip_address(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise InvalidArgument(f"{where}: {_show(value)} is not an IP address") from exc


def cidr_list(value: str, where: str) -> None:
    """kubelet's pod CIDR: one network, or an IPv4 and an IPv6 one separated by a comma."""
    for part in value.split(","):
        try:
            ipaddress.ip_network(part.strip(), strict=False)
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {_show(part)} is not a CIDR") from exc


def hostname(value: str, where: str) -> None:
    if not _HOSTNAME_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} is not a host name (RFC 1123)")


def word(value: str, where: str) -> None:
    if not _WORD_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} must not contain spaces or controls")


def cpuset(max_index: int) -> Check:
    def check(value: str, where: str) -> None:
        if not _CPUSET_RE.match(value):
            raise InvalidArgument(f"{where}: {_show(value)} is not a cpuset list like 0-3,5")
        for number in re.findall(r"\d+", value):
            if int(number) > max_index:
                raise InvalidArgument(f"{where}: {number} is above the largest index {max_index}")

    return check


def cgroup_file(value: str, where: str) -> None:
    if not _CGROUP_FILE_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} is not a cgroup v2 file name")


def page_size(value: str, where: str) -> None:
    if not _PAGE_SIZE_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} is not a huge page size like 2MB")


def device_permissions(value: str, where: str) -> None:
    if not _DEVICE_PERMISSIONS_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} must be letters of 'rwm'")


def capability(value: str, where: str) -> None:
    if not _CAPABILITY_RE.match(value):
        raise InvalidArgument(f"{where}: {_show(value)} is not a capability name")


def env_key(value: str, where: str) -> None:
    if "=" in value:
        raise InvalidArgument(f"{where}: {_show(value)} must not contain '='")


def _show(value: str) -> str:
    """The value for an error message: quoted, and cut so that a huge one stays short."""
    return repr(value if len(value) <= 80 else value[:80] + "...")
