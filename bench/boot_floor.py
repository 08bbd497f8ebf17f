#!/usr/bin/env python3
"""Boot the vmcri guest kernel + initramfs under plain QEMU and time it.

The default ("floor" mode) measures the bare floor of a VM pod start: the
kernel command line carries ``vmcri.mode=floor``, so /init prints
``vmcri-init: reached /init at <uptime>`` and powers off at once. No root
image, no libvirt, no agent: what remains is QEMU start-up, firmware, kernel
boot, initramfs unpack and poweroff. It is the baseline of later benchmarks.

Other modes boot the whole image (root image on virtio-blk):
  dryrun     /init sets everything up and stops where it would exec the agent
  selfcheck  the guest self-check (python, runc container, 9p, overlay,
             virtio-serial, ...), with a 9p share and an agent port attached
  agent      a real boot into the agent (stops when the guest powers off or
             at --timeout)

Examples:
  bench/boot_floor.py                            # floor, microvm and q35, 3 runs each
  bench/boot_floor.py --machine microvm --runs 10 --json
  bench/boot_floor.py --mode selfcheck --machine q35 --console

Only the standard library; needs qemu-system-x86_64 and a built image
(scripts/build-guest-image.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(
    rb"vmcri-init: (reached /init|reached the agent exec point|ready to exec agent|exec agent"
    rb"|starting self-check) at ([0-9.]+)"
)
SELFCHECK = re.compile(rb"vmcri-selfcheck: RESULT (PASS|FAIL)[^\r\n]*")
FATAL = re.compile(rb"vmcri-init: FATAL: [^\r\n]*")
AGENT_PORT = "vmcri.agent"


def kvm_usable() -> bool:
    if not os.path.exists("/dev/kvm"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M))


_TSC_KHZ: int | None = None


def host_tsc_khz() -> int | None:
    """The host's TSC rate in kHz, measured (rdtsc against CLOCK_MONOTONIC).

    Under TCG the guest's TSC is the host's TSC. A microvm has no HPET/PM timer,
    so the guest kernel cannot calibrate its TSC reliably on a loaded host (it
    then hangs at boot): pass it ``tsc_early_khz=<this>``.
    """
    global _TSC_KHZ
    if _TSC_KHZ is not None:
        return _TSC_KHZ
    import ctypes
    import mmap
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        # rdtsc; shl rdx,32; or rax,rdx; ret
        code = bytes.fromhex("0f3148c1e2204809d0c3")
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))
        rates = []
        for _ in range(5):
            t0, c0 = time.perf_counter_ns(), rdtsc()
            time.sleep(0.02)
            t1, c1 = time.perf_counter_ns(), rdtsc()
            rates.append((c1 - c0) * 1e6 / (t1 - t0))
        _TSC_KHZ = int(statistics.median(rates))
    except (OSError, ValueError):
        return None
    return _TSC_KHZ


def qemu_argv(args: argparse.Namespace, machine: str, tmp: Path) -> tuple[list[str], Path | None]:
    img = Path(args.image_dir)
    mmio = machine == "microvm"
    accel = args.accel
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    # microvm: ACPI on, since Debian's kernel has no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and
    # finds the virtio-mmio devices through ACPI (poweroff goes through ACPI too); rtc=on,
    # since without an RTC the kernel's rtc_cmos probe stalls ~1 s.
    m = "microvm,acpi=on,x-option-roms=off,rtc=on,isa-serial=on" if mmio else "q35"
    append = ["console=ttyS0", "panic=-1", "reboot=t"]
    if not args.verbose_kernel:
        append.append("quiet")
    if accel == "tcg" and args.tsc_hint:
        khz = host_tsc_khz()
        if khz:
            append.append(f"tsc_early_khz={khz}")
    append.append(f"vmcri.mode={args.mode}")
    if args.debug:
        append.append("vmcri.debug=1")
    append += args.append
    argv = [
        args.qemu,
        "-M",
        m,
        "-accel",
        accel,
        "-cpu",
        args.cpu,
        "-m",
        str(args.mem),
        "-smp",
        str(args.smp),
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        args.kernel or str(default_kernel(img)),
        "-initrd",
        args.initrd or str(img / "initrd.img"),
        "-append",
        " ".join(append),
    ]

    def dev(kind: str) -> str:
        return f"{kind}-device" if mmio else f"{kind}-pci"

    if args.mode != "floor" or args.root:
        argv += [
            "-drive",
            f"file={img / 'rootfs.img'},format=raw,if=none,id=root,readonly=on",
            "-device",
            f"{dev('virtio-blk')},drive=root",
        ]
    sock = None
    if args.share or args.mode == "selfcheck":
        share = Path(args.share) if args.share else tmp / "share"
        if not args.share:
            share.mkdir()
            (share / "hello-from-host.txt").write_text("hello\n")
        argv += [
            "-fsdev",
            f"local,id=fs0,path={share},security_model=passthrough",
            "-device",
            f"{dev('virtio-9p')},fsdev=fs0,mount_tag=test",
        ]
    if args.port or args.mode in ("selfcheck", "agent"):
        sock = tmp / "agent.sock"
        argv += [
            "-device",
            f"{dev('virtio-serial')},id=vser0",
            "-chardev",
            f"socket,path={sock},server=on,wait=off,id=agent0",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT}",
        ]
    if args.net:
        argv += [
            "-netdev",
            "user,id=net0,restrict=on",
            "-device",
            f"{dev('virtio-net')},netdev=net0",
        ]
    if args.rng:
        argv += ["-device", dev("virtio-rng")]
    return argv, sock


def default_kernel(img: Path) -> Path:
    """vmlinux (uncompressed ELF, PVH entry) when built: it skips the ~6 s XZ
    decompression of vmlinuz under TCG."""
    return img / "vmlinux" if (img / "vmlinux").exists() else img / "vmlinuz"


def read_port(sock: Path, out: bytearray, stop: threading.Event) -> None:
    """Host side of the agent port: connect and collect what the guest writes."""
    while not stop.is_set():
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock))
            break
        except OSError:
            s.close()
            time.sleep(0.01)
    else:
        return
    s.settimeout(0.2)
    with s:
        while not stop.is_set():
            try:
                b = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not b:
                return
            out += b


def boot_once(args: argparse.Namespace, machine: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="vmcri-boot-") as td:
        tmp = Path(td)
        argv, sock = qemu_argv(args, machine, tmp)
        if args.print_cmd:
            print(" ".join(argv), file=sys.stderr)
        port_data = bytearray()
        stop = threading.Event()
        t0 = time.monotonic()
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        reader = None
        if sock is not None:
            reader = threading.Thread(target=read_port, args=(sock, port_data, stop), daemon=True)
            reader.start()
        buf = bytearray()
        t_marker = None
        timed_out = False
        assert p.stdout is not None
        fd = p.stdout.fileno()
        os.set_blocking(fd, False)
        deadline = t0 + args.timeout
        while True:
            now = time.monotonic()
            if now > deadline and not timed_out:
                timed_out = True
                p.kill()
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            if chunk:
                if args.console:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                buf += chunk
                if t_marker is None and MARKER.search(buf):
                    t_marker = time.monotonic() - t0
                continue
            if chunk == b"":  # EOF: QEMU is gone (reaped below, with its rusage)
                break
            time.sleep(0.002)
        _, status, ru = os.wait4(p.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc
        wall = time.monotonic() - t0
        stop.set()
        if reader is not None:
            reader.join(1)
    markers = list(MARKER.finditer(buf))
    first = markers[0] if markers else None
    m = markers[-1] if markers else None
    sc = SELFCHECK.search(buf)
    fatal = FATAL.search(buf)
    res: dict[str, object] = {
        "machine": machine,
        "mode": args.mode,
        "rc": rc,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        # QEMU's own CPU time: far less sensitive than wall time to a busy host
        "qemu_cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "wall_to_marker_s": round(t_marker, 3) if t_marker is not None else None,
        "marker": first.group(1).decode() if first else None,
        "guest_uptime_s": float(first.group(2)) if first else None,
        "last_marker": m.group(1).decode() if m else None,
        "last_marker_uptime_s": float(m.group(2)) if m else None,
        # an agent boot runs until --timeout: reaching the exec point is success there
        "ok": first is not None and fatal is None and (not timed_out or args.mode == "agent"),
    }
    if sc:
        res["selfcheck"] = sc.group(0).decode()
        res["ok"] = res["ok"] and sc.group(1) == b"PASS"
        res["selfcheck_lines"] = [
            ln.decode(errors="replace").strip()
            for ln in buf.splitlines()
            if ln.startswith(b"vmcri-selfcheck:")
        ]
    if fatal:
        res["fatal"] = fatal.group(0).decode()
    if sock is not None:
        res["port_bytes_from_guest"] = port_data.decode(errors="replace")
    if not res["ok"] and not args.console:
        res["console_tail"] = buf[-3000:].decode(errors="replace")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--image-dir", default=os.environ.get("VMCRI_GUEST_DIR", str(REPO / "guest/build"))
    )
    ap.add_argument("--machine", choices=["microvm", "q35", "both"], default="both")
    ap.add_argument("--mode", choices=["floor", "dryrun", "selfcheck", "agent"], default="floor")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg")
    ap.add_argument("--cpu", default="max")
    ap.add_argument("--mem", type=int, default=512, help="MiB")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--kernel", help="kernel file (default: IMAGE_DIR/vmlinux, else vmlinuz)")
    ap.add_argument("--initrd", help="initramfs file (default: IMAGE_DIR/initrd.img)")
    ap.add_argument(
        "--no-tsc-hint",
        dest="tsc_hint",
        action="store_false",
        help="do not pass tsc_early_khz=<host TSC rate> under TCG",
    )
    ap.add_argument("--root", action="store_true", help="attach rootfs.img even in floor mode")
    ap.add_argument("--share", help="host dir to share over 9p with mount_tag 'test'")
    ap.add_argument("--port", action="store_true", help="attach the virtio-serial agent port")
    ap.add_argument(
        "--net", action="store_true", help="attach a virtio-net (QEMU user net, restrict=on)"
    )
    ap.add_argument("--rng", action="store_true", help="attach a virtio-rng")
    ap.add_argument("--debug", action="store_true", help="vmcri.debug=1")
    ap.add_argument(
        "--verbose-kernel", action="store_true", help="no 'quiet' on the kernel cmdline"
    )
    ap.add_argument("--append", action="append", default=[], help="extra kernel cmdline words")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--console", action="store_true", help="copy the guest console to stderr")
    ap.add_argument("--print-cmd", action="store_true")
    ap.add_argument("--json", action="store_true", help="print all results as JSON")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    args = ap.parse_args()

    for f in ("initrd.img",) + (("rootfs.img",) if args.mode != "floor" or args.root else ()):
        if not (Path(args.image_dir) / f).exists():
            print(
                f"boot_floor: {args.image_dir}/{f} missing; run scripts/build-guest-image.sh",
                file=sys.stderr,
            )
            return 2
    machines = ["microvm", "q35"] if args.machine == "both" else [args.machine]
    results = []
    summary = {}
    for mach in machines:
        runs = [boot_once(args, mach) for _ in range(args.runs)]
        results += runs
        ok = [r for r in runs if r["ok"]]
        walls = [float(r["wall_s"]) for r in ok]  # type: ignore[arg-type]
        ups = [float(r["guest_uptime_s"]) for r in ok]  # type: ignore[arg-type]
        cpus = [float(r["qemu_cpu_s"]) for r in ok]  # type: ignore[arg-type]
        summary[mach] = {
            "runs": len(runs),
            "ok": len(ok),
            "wall_s_median": round(statistics.median(walls), 3) if walls else None,
            "wall_s_min": round(min(walls), 3) if walls else None,
            "guest_uptime_s_median": round(statistics.median(ups), 3) if ups else None,
            "qemu_cpu_s_median": round(statistics.median(cpus), 3) if cpus else None,
        }
        if not args.json:
            for r in runs:
                line = (
                    f"{mach:8s} {args.mode:9s} wall {r['wall_s']:.3f}s  "
                    f"cpu {r['qemu_cpu_s']:.3f}s  "
                    f"marker@wall {r['wall_to_marker_s']}s  guest uptime {r['guest_uptime_s']}s  "
                    f"{'ok' if r['ok'] else 'FAILED'}"
                )
                if r.get("last_marker") and r["last_marker"] != r["marker"]:
                    line += f"  ({r['last_marker']} at {r['last_marker_uptime_s']}s)"
                print(line)
                for ln in r.get("selfcheck_lines") or []:  # type: ignore[attr-defined]
                    print("    " + ln)
                if r.get("port_bytes_from_guest"):
                    got = str(r["port_bytes_from_guest"]).strip()
                    print(f"    host read from port {AGENT_PORT}: {got!r}")
                if not r["ok"]:
                    print(r.get("fatal") or "", r.get("console_tail", ""), sep="\n")
            s = summary[mach]
            print(
                f"{mach:8s} summary: {s['ok']}/{s['runs']} ok, wall median {s['wall_s_median']}s "
                f"(min {s['wall_s_min']}s), guest uptime at marker median "
                f"{s['guest_uptime_s_median']}s, QEMU CPU median {s['qemu_cpu_s_median']}s"
            )
    if args.json:
        print(json.dumps({"summary": summary, "runs": results}, indent=2))
    return 0 if all(s["ok"] == s["runs"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
