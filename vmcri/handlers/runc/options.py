"""Options of the ``runc`` backend (``[runtimes.<name>.options]`` with backend "runc")."""

from __future__ import annotations

from dataclasses import dataclass

from vmcri.errors import ConfigError
from vmcri.supervisor.containers import EXEC_OUTPUT_LIMIT


@dataclass(frozen=True)
class RuncOptions:
    runc: str = "runc"  # the runc binary on the host (a name on PATH or a path)
    cgroup_parent: str = "/vmcri"  # cgroup of pods without a cgroup_parent (cgroupfs driver)
    pids_limit: int = 0  # pids.max of every container; 0 means no limit
    seccomp_profile_root: str = "/var/lib/kubelet/seccomp"  # relative localhost refs resolve here
    exec_output_limit: int = EXEC_OUTPUT_LIMIT  # ExecSync bytes kept per stream, 1024 to 480 KiB

    def __post_init__(self) -> None:
        if not self.runc:
            raise ConfigError("options.runc: must name a runc binary")
        if not self.cgroup_parent.startswith("/") or ".." in self.cgroup_parent.split("/"):
            raise ConfigError("options.cgroup_parent: must be an absolute cgroup path")
        if self.pids_limit < 0:
            raise ConfigError("options.pids_limit: must not be negative")
        # The agent answers ExecSync in one frame, so no stream can keep more than
        # EXEC_OUTPUT_LIMIT; a larger value would be cut there without a word.
        if not 1024 <= self.exec_output_limit <= EXEC_OUTPUT_LIMIT:
            raise ConfigError(
                f"options.exec_output_limit: must be between 1024 and {EXEC_OUTPUT_LIMIT}"
                " (an ExecSync answer is one agent frame)"
            )
