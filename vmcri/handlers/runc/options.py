"""Options of the ``runc`` backend (``[runtimes.<name>.options]`` with backend "runc")."""

from __future__ import annotations

from dataclasses import dataclass

from vmcri.errors import ConfigError


@dataclass(frozen=True)
class RuncOptions:
    runc: str = "runc"  # the runc binary on the host (a name on PATH or a path)
    cgroup_parent: str = "/vmcri"  # cgroup of pods without a cgroup_parent (cgroupfs driver)
    pids_limit: int = 0  # pids.max of every container; 0 means no limit
    seccomp_profile_root: str = "/var/lib/kubelet/seccomp"  # relative localhost refs resolve here
    exec_output_limit: int = 16 * 1024 * 1024  # ExecSync bytes kept per stream

    def __post_init__(self) -> None:
        if not self.runc:
            raise ConfigError("options.runc: must name a runc binary")
        if not self.cgroup_parent.startswith("/") or ".." in self.cgroup_parent.split("/"):
            raise ConfigError("options.cgroup_parent: must be an absolute cgroup path")
        if self.pids_limit < 0:
            raise ConfigError("options.pids_limit: must not be negative")
        if self.exec_output_limit < 1024:
            raise ConfigError("options.exec_output_limit: must be at least 1024")
