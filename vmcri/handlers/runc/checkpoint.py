"""The runc handler's part of a checkpoint: CRIU, as CRI-O and containerd use it.

runc checkpoints a container with ``runc checkpoint --image-path DIR --work-path DIR
--leave-running`` (and restores it with ``runc restore``), which runs CRIU. That works
only where CRIU works on this kernel, which ``criu check`` decides: Debian 12's CRIU
3.17 cannot read the vDSO layout of kernels newer than it knows ("vdso: Unexpected rt
vDSO area bounds") and refuses to dump anything. The probe runs once, when the handler
is built; until it passes every checkpoint of a runc pod is refused UNIMPLEMENTED with
CRIU's own reason, and Status says so (condition PodCheckpointRestore).
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from vmcri.handlers.base import SandboxBackend
from vmcri.handlers.checkpointer import NoCheckpoints, PodCheckpointer, Refusal
from vmcri.handlers.registry import BackendContext

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 20.0


def create(backend: SandboxBackend, options: object, context: BackendContext) -> PodCheckpointer:
    refusal = criu_refusal()
    log.info("runc checkpoints: %s", refusal.reason)
    return NoCheckpoints(refusal)


def criu_refusal(criu: str | None = None) -> Refusal:
    """Why runc pods cannot be checkpointed here. With a working CRIU this still answers
    UNIMPLEMENTED: dumping a container from its supervisor is not written yet."""
    path = criu or shutil.which("criu")
    if not path:
        return Refusal(
            "UNIMPLEMENTED",
            "runc pods are checkpointed with CRIU, which is not installed (Debian: criu)",
        )
    try:
        done = subprocess.run(
            [path, "check"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Refusal("UNIMPLEMENTED", f"runc pods need CRIU, and `criu check` failed: {exc}")
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        why = lines[0].strip()[:200] if lines else f"exit status {done.returncode}"
        return Refusal(
            "UNIMPLEMENTED",
            f"runc pods need CRIU, which does not work on this kernel (`criu check`: {why})",
        )
    return Refusal(
        "UNIMPLEMENTED",
        "CRIU works here, but vmcri does not yet dump runc containers from its supervisor",
    )
