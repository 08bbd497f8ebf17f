"""A local user on the node must not reach an image's or a pod's files (CVE-2021-41091 class).

Layers and container root filesystems hold setuid binaries and the pods'
data; a user who can walk to them can run the binaries as root or read the
data. The daemon's own directories stay traversable (``0711``: user-namespaced
runc pods walk to their rootfs), so every directory that holds pod or image
files must be private.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cri.conftest import CriEnv
from tests.integration.harness import daemon_with_busybox
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def env() -> Iterator[CriEnv]:
    if shutil.which("setpriv") is None or shutil.which("runc") is None:
        pytest.skip("needs setpriv (util-linux) and runc")
    # pytest's own tmp dirs are private to root, which would hide what vmcri does.
    tmp = Path(tempfile.mkdtemp(prefix="vmcri-local-", dir="/tmp"))
    tmp.chmod(0o711)
    try:
        with daemon_with_busybox(tmp, lambda t, _registry, i, d: CriEnv(t, i, d)) as env:
            yield env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, "cat", path], capture_output=True, text=True, timeout=30)


def test_layers_rootfs_and_writable_layers_are_out_of_reach(env: CriEnv) -> None:
    sandbox_id = env.run_pod("local")
    container_id = env.create(sandbox_id, "c")
    env.start(container_id)
    write = pb.ExecSyncRequest(
        container_id=container_id, cmd=["sh", "-c", "echo secret > /data"], timeout=30
    )
    assert env.runtime.ExecSync(write, timeout=60).exit_code == 0
    targets = glob.glob(f"{env.tmp}/root/images/layers/*/diff/bin/busybox")
    targets += glob.glob(f"{env.tmp}/state/backends/runc/containers/{container_id}/rootfs/data")
    targets += glob.glob(f"{env.tmp}/root/backends/runc/containers/{container_id}/upper/data")
    assert len(targets) >= 3, targets
    for target in targets:
        assert os.path.exists(target)  # root sees it ...
        seen = _as_nobody(target)  # ... another user does not
        assert seen.returncode != 0 and "Permission denied" in seen.stderr, (target, seen)
