#!/usr/bin/env python3
"""What a VM pod checkpoint costs: vmcri's live save against ``virsh save`` as the floor.

Takes a running libvirt domain this run may pause (one the caller made for it, with no
9p/virtio-fs share: QEMU refuses to migrate a guest with a mounted 9p export), then:

  live   vmcri.handlers.vm.snapshot.save_running into a CheckpointWriter: the migration
         stream (RAM while the guest runs, zero pages as flags) and the writable disks,
         the guest resumed; prints the time, the files' sizes and the guest's pause
  floor  ``virsh save --bypass-cache`` (the domain stops; it is restored with
         ``virsh restore`` and that time printed too)

Example:
  bench/checkpoint_bench.py ckpt-bench-416 --dir /var/tmp/ckpt-bench/out --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from vmcri.checkpoint.deadline import Deadline
from vmcri.checkpoint.paths import open_directory
from vmcri.checkpoint.writer import CheckpointWriter
from vmcri.handlers.vm.snapshot import LibvirtMonitor, save_running

URI = "qemu:///system"


def live(domain: str, directory: Path) -> dict[str, object]:
    target = Path(tempfile.mkdtemp(dir=directory))
    fd = open_directory(str(target), "dir")
    out = CheckpointWriter(fd, str(target))
    monitor = LibvirtMonitor(URI)
    started = time.monotonic()
    entries = save_running(monitor, domain, out.write, Deadline.of(None))
    took = time.monotonic() - started
    stats = monitor.qmp(domain, "query-migrate") or {}
    result = {
        "live_s": round(took, 3),
        "downtime_ms": stats.get("downtime"),
        "files": {e.name: e.size for e in entries},
        "ram": stats.get("ram", {}),
        "running_after": (monitor.qmp(domain, "query-status") or {}).get("running"),
    }
    out.abort()
    os.close(fd)
    target.rmdir()
    return result


def floor(domain: str, directory: Path) -> dict[str, object]:
    image = directory / "virsh.save"
    image.unlink(missing_ok=True)
    started = time.monotonic()
    subprocess.run(["virsh", "-c", URI, "save", domain, str(image), "--bypass-cache"], check=True)
    saved = time.monotonic() - started
    size = image.stat().st_size
    started = time.monotonic()
    subprocess.run(["virsh", "-c", URI, "restore", str(image), "--bypass-cache"], check=True)
    restored = time.monotonic() - started
    image.unlink()
    return {
        "virsh_save_s": round(saved, 3),
        "virsh_save_bytes": size,
        "virsh_restore_s": round(restored, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    result = {"domain": args.domain, **live(args.domain, args.dir), **floor(args.domain, args.dir)}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
