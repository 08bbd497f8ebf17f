#!/usr/bin/env python3
"""What QEMU's jail costs a VM start: the launcher with and without it, QEMU alone.

Each round runs, in turn and as root, ``qemu-system-x86_64 -version`` three ways and times
each from fork to exit (QEMU starts, prints, ends: what every pod start pays before QEMU
does anything of its own):

  qemu      the real binary, directly (the floor)
  launcher  through ``vmcri/handlers/vm/bin/qemu-system-x86_64`` without jail options:
            capabilities, the file server's group, the mode filter (what pods got before)
  jailed    the same with a pod's jail options (a root dir, a share and a disk dir
            read-write, the guest image's files and a layers dir read-only): the mount
            namespace, the binds, pivot_root, the uid of its own (what pods get now)

Prints medians and p90s in milliseconds and the ratios of the medians, same run.

Example:
  sudo .venv/bin/python bench/launcher_jail_bench.py --rounds 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vmcri.handlers.vm.launcher import (
    JAIL_READONLY,
    JAIL_ROOT,
    JAIL_WRITABLE,
    QEMU,
    launcher_path,
    real_binary,
)

GUEST = Path(__file__).resolve().parents[1] / "guest" / "build"


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return (time.perf_counter() - started) * 1000


def _pod(base: Path) -> list[str]:
    """A pod's jail options, over directories and files made for the bench."""
    for name in ("jail", "share", "disk/layers"):
        (base / name).mkdir(parents=True)
    guest = [GUEST / f for f in ("vmlinux", "initrd.img", "rootfs.img")]
    readonly = [p for p in guest if p.exists()] + [base / "disk" / "layers"]
    args = [JAIL_ROOT, str(base / "jail")]
    for path in (base / "share", base / "disk"):
        args += [JAIL_WRITABLE, str(path)]
    for path in readonly:
        args += [JAIL_READONLY, str(path)]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmcri-jail-bench-") as tmp:
        ways = {
            "qemu": [real_binary(QEMU), "-version"],
            "launcher": [launcher_path(QEMU), "-version"],
            "jailed": [launcher_path(QEMU), "-version", *_pod(Path(tmp))],
        }
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, argv in ways.items():
                times[way].append(_run(argv))
    report: dict[str, object] = {}
    for way, samples in times.items():
        samples.sort()
        report[way] = {
            "median_ms": round(statistics.median(samples), 1),
            "p90_ms": round(samples[int(len(samples) * 0.9) - 1], 1),
        }
    median = {way: statistics.median(samples) for way, samples in times.items()}
    report["jailed/launcher"] = round(median["jailed"] / median["launcher"], 3)
    report["jailed/qemu"] = round(median["jailed"] / median["qemu"], 3)
    report["jail_ms"] = round(median["jailed"] - median["launcher"], 1)
    report["rounds"] = args.rounds
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
