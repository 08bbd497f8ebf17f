"""Small-file writes on a VM pod's writable disk: where the time goes when rounds repeat.

``bench/file_bench.py`` found 2,000 small writes on a VM pod's rootfs growing round by round
(1.5, 5.1, 8.7 s) where the guest's tmpfs stays flat. This splits that, in one pod (a
privileged container, so it can mount the pod's writable ext4 a second time, raw, beside
the overlay the container's root is), each round alternating:

  rm+write          the round file_bench.py runs: delete the last round's 2,000 files,
                    ``sync``, then write 2,000 new ones (timed) on the raw ext4
  fresh dir         2,000 files into a new directory each round, nothing deleted
  rm+write, tuned   as rm+write after a remount with ``commit=60,nobarrier``
  tmpfs             the same round in the container's /dev/shm (the emulated CPU alone)

Times are the guest's ``/proc/uptime`` around the writes (10 ms steps); medians and
each round are printed. Run as root after scripts/setup.sh:

    .venv/bin/python bench/writable_disk_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.harness import NO_POD_NETWORK  # noqa: E402
from tests.integration.vm.conftest import VmEnv, vm_daemon  # noqa: E402
from vmcri.api import api_pb2 as pb  # noqa: E402

CONFIG = '\n[runtimes.vm]\nbackend = "vm"\n[runtimes.vm.options]\nwritable_layer_mib = 512\n'
# One round in directory DIR: the last round's files deleted and synced (untimed), then
# 2,000 small files written; prints the uptime before and after the writes.
ROUND = r"""
d=DIR; rm -rf $d; mkdir -p $d; sync
a=$(cut -d' ' -f1 /proc/uptime)
i=0; while [ $i -lt 2000 ]; do echo hello > $d/f$i; i=$((i+1)); done
b=$(cut -d' ' -f1 /proc/uptime)
echo "$a $b"
"""
# The pod's writable disk (the guest's only writable SCSI disk) mounted again at /mnt/wd:
# the same superblock as the one under the container's overlay.
RAW_MOUNT = r"""
for d in /sys/block/sd*; do
  [ "$(cat $d/ro)" = 0 ] || continue
  dev=$(cat $d/dev); busybox mknod /tmp/wd b ${dev%:*} ${dev#*:}
  mkdir -p /mnt/wd && mount -t ext4 /tmp/wd /mnt/wd && echo /mnt/wd
done
"""


def _shell(env: VmEnv, container: str, script: str) -> str:
    request = pb.ExecSyncRequest(container_id=container, cmd=["sh", "-c", script], timeout=300)
    result = env.runtime.ExecSync(request, timeout=320)
    if result.exit_code != 0:
        raise RuntimeError(result.stderr.decode())
    return str(result.stdout.decode())


def _timed(env: VmEnv, container: str, directory: str) -> float:
    start, end = _shell(env, container, ROUND.replace("DIR", directory)).split()
    return round(float(end) - float(start), 2)


def _measure(env: VmEnv, rounds: int) -> dict[str, list[float]]:
    privileged = pb.LinuxSandboxSecurityContext(privileged=True)
    sandbox, pod = env.run_pod("wd", linux=pb.LinuxPodSandboxConfig(security_context=privileged))
    linux = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(privileged=True)
    )
    container = env.create(sandbox, pod, "c", ["sleep", "3600"], linux=linux)
    env.start(container)
    (raw,) = _shell(env, container, RAW_MOUNT).split()
    ways = ("rm+write", "fresh dir", "rm+write, tuned", "tmpfs")
    times: dict[str, list[float]] = {way: [] for way in ways}
    for round_ in range(rounds):
        _shell(env, container, f"mount -o remount,commit=5,barrier {raw}")
        times["rm+write"].append(_timed(env, container, f"{raw}/w"))
        times["fresh dir"].append(_timed(env, container, f"{raw}/n{round_}"))
        _shell(env, container, f"mount -o remount,commit=60,nobarrier {raw}")
        times["rm+write, tuned"].append(_timed(env, container, f"{raw}/t"))
        times["tmpfs"].append(_timed(env, container, "/dev/shm/w"))
        print(round_, {way: t[-1] for way, t in times.items()}, flush=True)
    _shell(env, container, f"umount {raw}")
    stop = pb.StopPodSandboxRequest(pod_sandbox_id=sandbox)
    env.runtime.StopPodSandbox(stop, timeout=120)
    env.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=120)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="vmcri-wd-bench-", dir="/var/tmp") as tmp,
        vm_daemon(Path(tmp), NO_POD_NETWORK + CONFIG) as env,
    ):
        times = _measure(env, args.rounds)
    print(json.dumps({way: statistics.median(t) for way, t in times.items()}))


if __name__ == "__main__":
    main()
