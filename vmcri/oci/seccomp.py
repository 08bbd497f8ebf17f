"""Seccomp profiles: ``runtime/default`` written for vmcri, unconfined, localhost.

The default profile is a deny list on top of ``SCMP_ACT_ALLOW`` rather than
Docker's long allow list: it blocks what breaks out of or reaches around the
container's namespaces (kernel keyrings, modules, kexec, clock setting,
mounting and new namespaces without CAP_SYS_ADMIN, ...) while keeping the
profile short enough to review, and never breaks a program with a syscall
that is newer than the profile. Calls guarded by a capability are only
blocked when the container does not have that capability, so ``add`` of a
capability works as users expect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vmcri.errors import InvalidArgument
from vmcri.model import SecurityProfile

RUNTIME_DEFAULT, UNCONFINED, LOCALHOST = 0, 1, 2

EPERM = 1
ENOSYS = 38

ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
ARCHITECTURES_ARM = ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]

# Denied for everyone: not namespaced, no capability makes them safe in a pod.
_ALWAYS_DENIED = (
    "add_key",
    "keyctl",
    "request_key",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    "nfsservctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
)

# Denied unless the container holds the capability that the kernel checks anyway.
_DENIED_WITHOUT: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "mount",
        "umount",
        "umount2",
        "unshare",
        "setns",
        "pivot_root",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "swapon",
        "swapoff",
        "name_to_handle_at",
        "fanotify_init",
    ),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime"),
    "CAP_SYS_NICE": ("mbind", "set_mempolicy", "migrate_pages", "move_pages"),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
    "CAP_SYS_PTRACE": ("userfaultfd",),
}

# clone(2) flags that create namespaces; new namespaces need CAP_SYS_ADMIN.
_CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


def default_profile(capabilities: Sequence[str]) -> dict[str, object]:
    """vmcri's ``runtime/default`` profile for a container holding ``capabilities``."""
    denied: list[str] = list(_ALWAYS_DENIED)
    for cap, calls in _DENIED_WITHOUT.items():
        if cap not in capabilities:
            denied.extend(calls)
    syscalls: list[dict[str, object]] = [
        {"names": sorted(denied), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}
    ]
    if "CAP_SYS_ADMIN" not in capabilities:
        # clone3 passes its flags in memory a filter cannot read: answer ENOSYS so
        # libc falls back to clone(2), whose flags are checked below.
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
        for flag in _CLONE_NAMESPACE_FLAGS:
            syscalls.append(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": EPERM,
                    "args": [
                        {"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}
                    ],
                }
            )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES + ARCHITECTURES_ARM,
        "syscalls": syscalls,
    }


def validate_profile(profile: Mapping[str, object], field: str) -> dict[str, object]:
    """Check the shape of a localhost profile; raises InvalidArgument naming ``field``."""
    if not isinstance(profile, Mapping):
        raise InvalidArgument(f"{field}: the seccomp profile must be a JSON object")
    action = profile.get("defaultAction")
    if not isinstance(action, str) or not action.startswith("SCMP_ACT_"):
        raise InvalidArgument(f"{field}: the seccomp profile needs a defaultAction SCMP_ACT_*")
    syscalls = profile.get("syscalls", [])
    if not isinstance(syscalls, list):
        raise InvalidArgument(f"{field}: syscalls must be a list")
    return dict(profile)


def seccomp_for(
    profile: SecurityProfile,
    privileged: bool,
    capabilities: Sequence[str],
    localhost: Mapping[str, object] | None,
    field: str,
) -> dict[str, object] | None:
    """The linux.seccomp object, or None for no filter.

    Privileged containers run unconfined, as in Kubernetes. A Localhost
    profile must have been loaded by the caller into ``localhost``.
    Raises InvalidArgument naming ``field`` for an unknown kind or a missing profile.
    """
    if privileged or profile.kind == UNCONFINED:
        return None
    if profile.kind == RUNTIME_DEFAULT:
        return default_profile(capabilities)
    if profile.kind == LOCALHOST:
        if not profile.localhost_ref:
            raise InvalidArgument(f"{field}.localhost_ref: must name a profile file")
        if localhost is None:
            raise InvalidArgument(
                f"{field}.localhost_ref: profile {profile.localhost_ref!r} was not loaded"
            )
        return validate_profile(localhost, f"{field}.localhost_ref")
    raise InvalidArgument(f"{field}.profile_type: unknown seccomp profile type {profile.kind}")
