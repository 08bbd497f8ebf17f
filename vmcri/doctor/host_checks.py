"""Host-wide checks: cgroups, CNI, anti-spoofing (nft), free disk."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from vmcri.doctor.model import Check, Status

CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(3)'s test
NEEDED_CONTROLLERS = ("cpu", "memory", "pids")
GIB = 1024**3
DISK_FAIL_BYTES = GIB // 2
DISK_WARN_BYTES = 5 * GIB


def check_cgroups(
    driver: str, root: Path = CGROUP_ROOT, systemd_marker: Path = SYSTEMD_RUNNING
) -> Check:
    controllers_file = root / "cgroup.controllers"
    if controllers_file.is_file():
        controllers = controllers_file.read_text().split()
        found = f"cgroup v2 (unified), controllers: {' '.join(controllers)}"
        missing = [c for c in NEEDED_CONTROLLERS if c not in controllers]
    elif (root / "memory").is_dir():
        found = "cgroup v1 (or hybrid)"
        missing = [c for c in NEEDED_CONTROLLERS if not (root / c).is_dir()]
    else:
        return Check(
            "cgroups",
            Status.FAIL,
            f"no cgroup file system at {root}",
            "runc pods cannot start (and VM guests get no limits on the host)",
            "mount cgroup2 on /sys/fs/cgroup",
        )
    found += f"; cgroup_driver = '{driver}'"
    if driver == "systemd" and not systemd_marker.is_dir():
        return Check(
            "cgroups",
            Status.DEGRADED,
            found + ", but systemd is not running",
            "kubelet is told 'systemd' while cgroups are managed directly",
            "set cgroup_driver = 'cgroupfs' (kubelet's cgroupDriver must match)",
        )
    if missing:
        return Check(
            "cgroups",
            Status.DEGRADED,
            found,
            f"no {', '.join(missing)} limits for runc pods",
            "enable the controllers in the parent cgroup's cgroup.subtree_control",
        )
    return Check("cgroups", Status.OK, found, "pod limits are enforced")


def _cni_files(conf_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    except OSError:
        return []


def _plugin_types(conf: Path) -> list[str]:
    data = json.loads(conf.read_text())
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if isinstance(plugins, list):
        return [str(p.get("type", "?")) for p in plugins if isinstance(p, dict)]
    return [str(data.get("type", "?"))] if isinstance(data, dict) else []


def check_cni(conf_dir: Path, bin_dirs: Sequence[Path]) -> Check:
    files = _cni_files(conf_dir)
    bins = ":".join(str(d) for d in bin_dirs)
    if not files:
        return Check(
            "cni",
            Status.DEGRADED,
            f"no network config in {conf_dir} (plugins: {bins})",
            "pods get loopback only and Status reports NetworkReady=false",
            f"write a *.conflist into {conf_dir} (docs/operator.md shows one)",
        )
    conf = files[0]
    try:
        types = _plugin_types(conf)
    except (OSError, ValueError) as exc:
        return Check(
            "cni",
            Status.FAIL,
            f"{conf} does not parse: {exc}",
            "pod network set-up fails, so pods cannot start",
            f"fix or remove {conf}",
        )
    missing = [t for t in types if not any((d / t).is_file() for d in bin_dirs)]
    found = f"{conf} (plugins {', '.join(types) or 'none'})"
    if missing:
        return Check(
            "cni",
            Status.FAIL,
            f"{found}; not in {bins}: {', '.join(missing)}",
            "pod network set-up fails, so pods cannot start",
            "apt-get install containernetworking-plugins, or fix cni_bin_dirs",
        )
    return Check("cni", Status.OK, found, "pods join this network")


def check_nft(networking: bool, binary: str | None = None) -> Check:
    """``nft`` keeps each pod to its own addresses (``vmcri/network/spoofguard.py``)."""
    path = binary if binary is not None else shutil.which("nft")
    if not networking:
        return Check("nft", Status.INFO, path or "not installed", "pod networking is disabled")
    if not path:
        return Check(
            "nft",
            Status.FAIL,
            "nft is not installed",
            "pods with a CNI network cannot start: nothing would keep them from "
            "spoofing other pods' addresses",
            "apt-get install nftables",
        )
    return Check("nft", Status.OK, path, "pods send only from their own MAC and IPs")


def check_disk(root_dir: Path) -> Check:
    existing = root_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # before the first start the root dir does not exist yet
    free = shutil.disk_usage(existing).free
    found = f"{free / GIB:.1f} GiB free under {existing}"
    fix = f"free space on the file system of {root_dir}, or move root to a larger one"
    if free < DISK_FAIL_BYTES:
        return Check("disk", Status.FAIL, found, "image pulls and pod start-up fail", fix)
    if free < DISK_WARN_BYTES:
        return Check("disk", Status.DEGRADED, found, "room for a few images only", fix)
    return Check("disk", Status.OK, found, "room for images and pod state")
