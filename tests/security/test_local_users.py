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
import signal
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


# A local user who can open the daemon's lock file can hold a shared lock on it for ever:
# the restarted daemon then refused to start ("in use by another vmcri daemon").
LOCKER = """
import fcntl, os, sys, time
tries = 0
while True:
    for path in sys.argv[1:]:
        try:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            tries += 1
            if tries == 1:
                print("refused:", exc, flush=True)
            continue
        print("locked", path, flush=True)
        time.sleep(3600)
    time.sleep(0.01)  # the attacker's own pace, not the test's synchronisation
"""


def _daemon_locks(env: CriEnv) -> list[str]:
    return glob.glob(f"{env.daemon.state}/**/vmcri.lock", recursive=True)


def test_a_local_user_cannot_hold_the_daemons_lock_and_a_restart_works(env: CriEnv) -> None:
    locks = _daemon_locks(env)
    assert locks, "the daemon holds a lock file in its state dir"
    for path in locks:
        tried = subprocess.run(
            [*NOBODY, "flock", "--shared", "--nonblock", path, "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (path, tried)
    attacker = subprocess.Popen(
        [*NOBODY, "/usr/bin/python3", "-c", LOCKER, *locks],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        first = attacker.stdout.readline()
        assert first.startswith("refused:"), first
        env.restart(signal.SIGTERM)  # the new daemon takes the lock while nobody tries
        assert env.runtime.Version(pb.VersionRequest(), timeout=30).runtime_name == "vmcri"
        assert attacker.poll() is None  # still trying, never got it
    finally:
        attacker.kill()
        attacker.wait()
    assert set(_daemon_locks(env)) == set(locks)
