"""A runc container that floods its stdout, played for real: its pod's host agent carries
the output to the daemon as events, so the flood must stay inside that pod's bounds.

The attacker writes as fast as it can for the whole test; meanwhile another pod's
container answers ExecSync promptly, the daemon's memory stays bounded, and the
attacker's own pod still answers too (its log is written, it can be stopped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import daemon_with_busybox
from tests.integration.vm.conftest import VmEnv
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

FLOOD = ["sh", "-c", "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[VmEnv]:
    with daemon_with_busybox(tmp_path, VmEnv) as env:
        yield env


def _pod(env: VmEnv, name: str) -> tuple[str, pb.PodSandboxConfig]:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="flood"),
        log_directory=str(env.tmp / "logs" / name),
    )
    request = pb.RunPodSandboxRequest(config=config, runtime_handler="runc")
    sandbox_id = env.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    return sandbox_id, config


def test_a_flooding_container_stalls_no_other_pod_and_holds_the_daemon_bounded(
    env: VmEnv,
) -> None:
    attacker_pod, attacker_cfg = _pod(env, "attacker")
    victim_pod, victim_cfg = _pod(env, "victim")
    victim = env.create(victim_pod, victim_cfg, "quiet", ["sleep", "1000"])
    env.start(victim)
    baseline = _rss_kib(env.daemon.process.pid)

    flood = env.create(attacker_pod, attacker_cfg, "flood", FLOOD)
    env.start(flood)
    log = env.tmp / "logs" / "attacker" / "flood.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 8 << 20, 60, "the flood to be logged")

    slowest = 0.0
    for _ in range(10):
        started = time.monotonic()
        result = env.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=victim, cmd=["echo", "alive"], timeout=10),
            timeout=30,
        )
        slowest = max(slowest, time.monotonic() - started)
        assert result.stdout == b"alive\n"
    assert slowest < 5.0, f"another pod's ExecSync took {slowest:.1f}s during the flood"
    grown = _rss_kib(env.daemon.process.pid) - baseline
    assert grown < 64 * 1024, f"the daemon grew by {grown} KiB during the flood"

    # The flooding pod itself is still served: it stops at once when told.
    env.runtime.StopContainer(pb.StopContainerRequest(container_id=flood, timeout=0), timeout=30)
    assert env.status(flood).state == pb.CONTAINER_EXITED
    size = log.stat().st_size
    assert size > 8 << 20
