#!/usr/bin/env python3
"""What a VM pod checkpoint costs: vmcri's live save against ``virsh save`` as the floor.

Takes a running libvirt domain this run may pause (one the caller made for it, with no
9p/virtio-fs share: QEMU refuses to migrate a guest with a mounted 9p export), then:

  live   vmcri.handlers.vm.snapshot.save_running into a CheckpointWriter: the migration
         stream (RAM while the guest runs, zero pages as flags) and the writable disks,
         the guest resumed; prints the time, the files' sizes and the guest's pause
  floor  ``virsh save --bypass-cache`` (the domain stops; it is restored with
         ``virsh restore`` and that time printed too)
  --restore XML   then a round trip: save live, destroy the domain, create it again from
         XML waiting for a stream (``-incoming defer``), load the saved stream
         (vmcri.handlers.vm.snapshot.load_stream); with --agent SOCKET the guest agent is
         pinged before and after, and its uptime shows the same guest went on

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
from vmcri.handlers.vm.snapshot import LibvirtMonitor, load_stream, save_running

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


def round_trip(domain: str, directory: Path, xml: Path, agent: str) -> dict[str, object]:
    """Save live, destroy, recreate waiting for the stream, load it; the agent's uptime
    before and after shows whether the same guest runs on."""
    import libvirt

    before = _agent_uptime(agent)
    target = Path(tempfile.mkdtemp(dir=directory))
    fd = open_directory(str(target), "dir")
    out = CheckpointWriter(fd, str(target))
    monitor = LibvirtMonitor(URI)
    started = time.monotonic()
    entries = save_running(monitor, domain, out.write, Deadline.of(None))
    saved = time.monotonic() - started
    conn = libvirt.open(URI)
    conn.lookupByName(domain).destroy()
    incoming = (
        xml.read_text()
        .replace(
            "<domain type='qemu'>",
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
        )
        .replace(
            "</domain>",
            "<qemu:commandline><qemu:arg value='-incoming'/><qemu:arg value='defer'/>"
            "</qemu:commandline></domain>",
        )
    )
    started = time.monotonic()
    conn.createXML(incoming, 0)
    memory = target / "vmcri-checkpoint" / entries[0].name
    with open(memory, "rb") as stream:
        load_stream(monitor, domain, stream.fileno(), entries[0].size, Deadline.of(None))
    loaded = time.monotonic() - started
    after = _agent_uptime(agent)
    out.abort()
    os.close(fd)
    target.rmdir()
    return {
        "save_s": round(saved, 3),
        "restore_s": round(loaded, 3),
        "agent_uptime_before_s": before,
        "agent_uptime_after_s": after,
    }


def _agent_uptime(socket_path: str) -> float | None:
    if not socket_path:
        return None
    from vmcri.agent.client import AgentClient

    client = AgentClient(f"unix://{socket_path}", connect_timeout=60)
    try:
        client.connect()
        return round(client.ping(timeout=60).uptime_ns / 1e9, 2)
    finally:
        client.close()


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
    parser.add_argument("--restore", type=Path, help="the domain's XML, for a round trip")
    parser.add_argument("--agent", default="", help="the guest agent's unix socket")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.restore:
        trip = round_trip(args.domain, args.dir, args.restore, args.agent)
        print(json.dumps({"domain": args.domain, **trip}, indent=None if args.json else 1))
        return
    result = {"domain": args.domain, **live(args.domain, args.dir), **floor(args.domain, args.dir)}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
