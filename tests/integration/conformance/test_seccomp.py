"""Seccomp on both handlers: which filter a container really runs under.

An empty ``SecurityProfile`` (RuntimeDefault is its zero value) means the
runtime's default profile, a missing one means unconfined, and a Localhost
profile is any host file kubelet names, in a VM pod too (the host reads it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.conformance.conftest import Pod
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

MODE = ["sleep", "3600"]


def _mode(pod: Pod, container_id: str) -> int:
    """The seccomp mode of the container's process and of an exec in it (they must agree)."""
    modes = set()
    for status in ("/proc/1/status", "/proc/self/status"):
        result = pod.exec(container_id, ["cat", status])
        assert result.exit_code == 0, result.stderr
        found = re.search(rb"^Seccomp:\s+(\d)$", result.stdout, re.M)
        assert found, result.stdout
        modes.add(int(found.group(1)))
    assert len(modes) == 1, f"container and exec differ: {modes}"
    return modes.pop()


def _security(profile: pb.SecurityProfile | None) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(seccomp=profile)


def test_runtime_default_filters_and_a_missing_profile_is_unconfined(pod: Pod) -> None:
    default = pod.run("seccomp-default", MODE, _security(pb.SecurityProfile()))
    unset = pod.run("seccomp-unset", MODE, _security(None))
    assert _mode(pod, default) == 2
    assert _mode(pod, unset) == 0
    for container_id in (default, unset):
        pod.remove(container_id)


def test_a_localhost_profile_anywhere_on_the_host_is_applied(pod: Pod, tmp_path: Path) -> None:
    # Outside /var/lib/kubelet/seccomp: kubelet is trusted to name any profile file.
    # mkdir answers EACCES (13) under it; everything else is allowed.
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    path = tmp_path / f"deny-mkdir-{pod.handler}.json"
    path.write_text(json.dumps(profile))
    local = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))
    container_id = pod.run("seccomp-local", MODE, _security(local))
    assert _mode(pod, container_id) == 2
    denied = pod.exec(container_id, ["mkdir", "/tmp/denied"])
    assert denied.exit_code != 0 and b"Permission denied" in denied.stderr, denied
    allowed = pod.exec(container_id, ["touch", "/tmp/allowed"])
    assert allowed.exit_code == 0, allowed.stderr
    pod.remove(container_id)
