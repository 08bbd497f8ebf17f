"""VM templates with the real thing: a template QEMU refuses cold-boots the pod, leaving nothing.

The VM suite's other pods are restored from the shared template (conftest); here a copy of
it whose saved state is garbage, sealed so that it passes the file checks (digest and size
match), stands for "a restore that libvirt or QEMU refuses". Damaged files (truncated,
corrupt, of another guest image) are refused before any VM starts: tests/unit/handlers/vm.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import start_daemon, stop_daemon
from vmcri.api import api_pb2 as pb

from .conftest import VmEnv, domain_exists, vm_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("tpl")) as env:
        yield env


def domains_naming(path: Path) -> list[str]:
    names = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--name"], capture_output=True, text=True
    ).stdout.split()
    found = []
    for name in names:
        xml = subprocess.run(
            ["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True
        ).stdout
        if str(path) in xml:
            found.append(name)
    return found


def test_a_template_qemu_refuses_cold_boots_the_pod_and_leaves_nothing(
    template_env: VmEnv,
) -> None:
    env = template_env
    link = env.daemon.root / "backends" / "vm" / "templates"
    shared = link.resolve()
    private = env.tmp / "templates"
    (template,) = [p for p in shared.iterdir() if not p.name.startswith(".")]
    copy = private / template.name
    copy.mkdir(parents=True)
    subprocess.run(["cp", "--sparse=always", str(template / "memory"), str(copy)], check=True)
    garbage = b"QEVM\x00\x00\x00\x03" + b"\x5a" * 4096  # QEMU's magic, then nonsense
    (copy / "state").write_bytes(garbage)
    meta = json.loads((template / "meta.json").read_text())
    meta["state_bytes"] = len(garbage)
    meta["state_sha256"] = hashlib.sha256(garbage).hexdigest()
    (copy / "meta.json").write_text(json.dumps(meta))
    link.unlink()
    link.symlink_to(private)
    env.restart(kill=False)

    sandbox_id, _pod = env.run_pod("refused")
    assert env.pod_state(sandbox_id) == pb.SANDBOX_READY
    assert env.started_as(sandbox_id) == "cold"
    log = env.daemon.log.read_text()
    assert f"sandbox {sandbox_id}: restore from VM template" in log and "cold boot" in log
    assert not copy.exists() or (copy / "state").read_bytes() != garbage  # discarded
    sockets = env.daemon.state / "backends" / "vm" / "sockets"
    assert not list(sockets.glob("*.in"))

    env.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
    env.sandboxes.remove(sandbox_id)
    assert not domain_exists(sandbox_id)
    assert not [s for s in sockets.iterdir() if s.name.startswith(sandbox_id[:16])]
    # The daemon now rebuilds the template in the background: stopped mid-build, it leaves
    # no VM behind.
    stop_daemon(env.daemon)
    assert domains_naming(private) == []
    link.unlink()
    link.symlink_to(shared)
    env.daemon = start_daemon(env.tmp, config=env.tmp / "config.toml")
    shutil.rmtree(private, ignore_errors=True)
