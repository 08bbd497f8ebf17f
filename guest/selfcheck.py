"""vmcri guest self-check, run as PID 1 by /init with ``vmcri.mode=selfcheck``.

Checks what the agent will rely on (Python stdlib, runc and a real container
under cgroup v2, 9p shares, overlayfs, virtio-serial ports, vsock, ip) and
prints one line per check on the console::

    vmcri-selfcheck: <check>: OK|FAIL|SKIP <detail>
    vmcri-selfcheck: RESULT PASS|FAIL (<n> ok, <n> failed, <n> skipped) at <uptime>

then powers the VM off, whatever happens. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

PREFIX = "vmcri-selfcheck:"
WORK = "/run/vmcri/selfcheck"
RESULTS: dict[str, int] = {"OK": 0, "FAIL": 0, "SKIP": 0}
libc = ctypes.CDLL(None, use_errno=True)


class Skip(Exception):
    pass


def uptime() -> str:
    with open("/proc/uptime") as f:
        return f.read().split()[0]


def say(msg: str) -> None:
    print(f"{PREFIX} {msg}", flush=True)


def run(argv: list[str], timeout: float = 60.0) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {out[-400:]}")
    return out


def check(name: str, fn: Callable[[], str]) -> None:
    t = time.monotonic()
    try:
        detail = fn()
        status = "OK"
    except Skip as e:
        detail, status = str(e), "SKIP"
    except Exception as e:  # report and go on with the next check
        detail, status = f"{type(e).__name__}: {e}", "FAIL"
        if os.environ.get("VMCRI_DEBUG") == "1":
            traceback.print_exc()
    RESULTS[status] += 1
    detail = " ".join(detail.split())
    say(f"{name}: {status} {detail} [{time.monotonic() - t:.2f}s]")


def mount(src: str, target: str, fstype: str, opts: str = "", flags: int = 0) -> None:
    if (
        libc.mount(src.encode(), target.encode(), fstype.encode(), flags, opts.encode() or None)
        != 0
    ):
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t {fstype} {src} {target} -o {opts}: {os.strerror(e)}")


def umount(target: str) -> None:
    if libc.umount2(target.encode(), 2) != 0:  # MNT_DETACH
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def mounts() -> list[list[str]]:
    with open("/proc/self/mounts") as f:
        return [line.split() for line in f]


# ---------------------------------------------------------------- checks
def c_python() -> str:
    import asyncio  # noqa: F401
    import concurrent.futures  # noqa: F401
    import hashlib  # noqa: F401
    import logging  # noqa: F401
    import selectors  # noqa: F401
    import signal  # noqa: F401
    import socket  # noqa: F401
    import ssl  # noqa: F401
    import struct  # noqa: F401

    return f"{sys.version.split()[0]} ({sys.executable})"


def c_python_startup() -> str:
    t = time.monotonic()
    run([sys.executable, "-c", "pass"])
    t1 = time.monotonic() - t
    t = time.monotonic()
    run([sys.executable, "-c", "import asyncio, json, subprocess, socket, struct, logging"])
    t2 = time.monotonic() - t
    return f"python3 -c pass {t1:.3f}s; with asyncio/json/subprocess/socket/logging {t2:.3f}s"


def c_protobuf() -> str:
    try:
        import google.protobuf as pb
    except ImportError as e:
        raise Skip(f"google.protobuf not in the image ({e})") from None
    from google.protobuf.internal import api_implementation

    return (
        f"protobuf {pb.__version__} implementation {api_implementation.Type()} from {pb.__file__}"
    )


def c_vmcri_package() -> str:
    if not os.path.exists("/opt/vmcri/vmcri/__init__.py"):
        raise Skip("no /opt/vmcri/vmcri package")
    import vmcri

    files = sum(
        len([f for f in fs if f.endswith(".py")]) for _, _, fs in os.walk("/opt/vmcri/vmcri")
    )
    return f"import vmcri ok ({files} .py files at {os.path.dirname(vmcri.__file__)})"


def c_runc_version() -> str:
    return run(["runc", "--version"]).splitlines()[0]


def c_crun_version() -> str:
    return run(["crun", "--version"]).splitlines()[0]


def c_cgroup2() -> str:
    m = [x for x in mounts() if x[1] == "/sys/fs/cgroup"]
    if not m or m[0][2] != "cgroup2":
        raise RuntimeError(f"/sys/fs/cgroup is not cgroup2: {m}")
    with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
        return f"subtree_control: {f.read().strip()}"


def c_runc_container() -> str:
    return _run_container("runc")


def c_crun_container() -> str:
    return _run_container("crun")


def _run_container(runtime: str) -> str:
    bb = f"{WORK}/busybox"
    if not os.path.exists(bb):
        raise Skip("no busybox for the test container")
    bundle = f"{WORK}/bundle-{runtime}"
    rootfs = f"{bundle}/rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp"):
        os.makedirs(f"{rootfs}/{d}", exist_ok=True)
    shutil.copy(bb, f"{rootfs}/bin/busybox")
    os.symlink("busybox", f"{rootfs}/bin/sh")
    run(["runc", "spec", "--bundle", bundle])
    with open(f"{bundle}/config.json") as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = [
        "/bin/busybox",
        "sh",
        "-c",
        "echo hello-from-container; /bin/busybox cat /proc/self/cgroup; /bin/busybox id -u",
    ]
    spec["root"]["readonly"] = True
    spec["linux"]["cgroupsPath"] = f"/vmcri-selfcheck/{runtime}"
    spec["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
    spec["linux"]["resources"]["pids"] = {"limit": 64}
    with open(f"{bundle}/config.json", "w") as f:
        json.dump(spec, f)
    out = run([runtime, "run", "--bundle", bundle, f"selfcheck-{runtime}"], timeout=120)
    lines = out.splitlines()
    if "hello-from-container" not in lines:
        raise RuntimeError(f"unexpected container output: {out[-300:]}")
    return f"{runtime} run ok: " + " | ".join(lines[:3])


def share_tags() -> list[str]:
    tags = []
    base = "/sys/bus/virtio/drivers/9pnet_virtio"
    if os.path.isdir(base):
        for d in sorted(os.listdir(base)):
            p = f"{base}/{d}/mount_tag"
            if os.path.exists(p):
                with open(p, "rb") as f:
                    tags.append(f.read().rstrip(b"\0\n").decode())
    return tags


MOUNTED_9P: list[str] = []


def c_9p() -> str:
    tags = share_tags()
    if not tags:
        raise Skip("no virtio-9p device (add -virtfs ...,mount_tag=TAG)")
    res = []
    for tag in tags:
        mp = f"/mnt/shares/{tag}"
        already = any(x[0] == tag and x[2] == "9p" for x in mounts())
        if not already:
            os.makedirs(mp, exist_ok=True)
            mount(tag, mp, "9p", "trans=virtio,version=9p2000.L,msize=262144")
        else:
            mp = next(x[1] for x in mounts() if x[0] == tag and x[2] == "9p")
        MOUNTED_9P.append(mp)
        entries = sorted(os.listdir(mp))
        rw = "ro"
        try:
            with open(f"{mp}/.vmcri-selfcheck", "w") as f:
                f.write("guest was here\n")
            os.unlink(f"{mp}/.vmcri-selfcheck")
            rw = "rw"
        except OSError as e:
            rw = f"not writable ({e.strerror})"
        res.append(f"{tag} on {mp}: {len(entries)} entries {entries[:5]} {rw}")
    return "; ".join(res)


def c_overlay() -> str:
    base = f"{WORK}/ovl"
    lower = MOUNTED_9P[0] if MOUNTED_9P else "/opt/vmcri"
    # container-style: upper/work on a real tmpfs (/var/lib/vmcri), not on the root overlay
    state = "/var/lib/vmcri/selfcheck-ovl"
    for d in (f"{state}/upper", f"{state}/work", f"{base}/merged"):
        os.makedirs(d, exist_ok=True)
    mount(
        "overlay",
        f"{base}/merged",
        "overlay",
        f"lowerdir={lower},upperdir={state}/upper,workdir={state}/work",
    )
    try:
        with open(f"{base}/merged/written-in-overlay", "w") as f:
            f.write("x")
        if not os.path.exists(f"{state}/upper/written-in-overlay"):
            raise RuntimeError("write did not land in the upper dir")
        n = len(os.listdir(f"{base}/merged"))
    finally:
        umount(f"{base}/merged")
    kind = "9p" if MOUNTED_9P else "root image"
    return f"overlay lower={lower} ({kind}) upper=tmpfs ok, {n} entries"


def c_virtio_serial() -> str:
    base = "/sys/class/virtio-ports"
    ports = []
    if os.path.isdir(base):
        for d in sorted(os.listdir(base)):
            try:
                with open(f"{base}/{d}/name") as f:
                    name = f.read().strip()
            except OSError:
                name = ""
            dev = f"/dev/{d}"
            ports.append(f"{name or '?'}={dev}{'' if os.path.exists(dev) else '(missing)'}")
    if not ports:
        raise Skip("no virtio-serial port (add a virtserialport)")
    res = ", ".join(ports)
    agent_dev = os.environ.get("VMCRI_AGENT_DEVICE")
    if agent_dev:
        dev = agent_dev
        fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK)
        try:
            msg = f"vmcri-selfcheck hello from guest at {uptime()}\n".encode()
            n = os.write(fd, msg)
            res += f"; wrote {n} bytes to {os.environ.get('VMCRI_AGENT_PORT')} ({dev})"
        except OSError as e:
            res += f"; write to {dev}: {e.strerror} (host side not connected?)"
        finally:
            os.close(fd)
    return res


def c_vsock() -> str:
    if not os.path.exists("/dev/vsock"):
        raise Skip("no /dev/vsock (no vhost-vsock device)")
    import socket

    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.close()
    return "/dev/vsock present, AF_VSOCK socket ok"


def c_ip() -> str:
    out = run(["ip", "-br", "link"])
    return " | ".join(out.splitlines())


def c_mounts() -> str:
    want = {
        "/": None,
        "/run": "tmpfs",
        "/tmp": "tmpfs",
        "/var/lib/vmcri": "tmpfs",
        "/dev": "devtmpfs",
        "/dev/pts": "devpts",
        "/dev/shm": "tmpfs",
        "/proc": "proc",
        "/sys": "sysfs",
    }
    have = {x[1]: x[2] for x in mounts()}
    missing = [f"{p}({t})" for p, t in want.items() if p not in have or (t and have[p] != t)]
    if missing:
        raise RuntimeError(f"missing/wrong mounts: {missing}")
    return f"/ is {have['/']}; " + ", ".join(f"{p}={have[p]}" for p in want if p != "/")


def c_rootfs_read() -> str:
    """Read every file of the read-only root image once: its cold read speed."""
    base = "/run/vmcri/rootfs/ro"
    if not os.path.isdir(f"{base}/usr"):
        raise Skip(f"no {base}")
    fstype = next((x[2] for x in mounts() if x[1] == base), "?")
    total = files = 0
    t = time.monotonic()
    for root, _, names in os.walk(f"{base}/usr"):
        for name in names:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            with open(p, "rb") as f:
                while b := f.read(1 << 20):
                    total += len(b)
            files += 1
    dt = time.monotonic() - t
    mb = total / 1e6
    return f"{fstype}: {files} files, {mb:.1f} MB in {dt:.2f}s ({mb / dt:.1f} MB/s)"


def c_memory() -> str:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            info[k] = v.strip()
    return (
        f"MemTotal {info['MemTotal']}, MemAvailable {info['MemAvailable']}, nproc {os.cpu_count()}"
    )


def power_off() -> None:
    sys.stdout.flush()
    os.sync()
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("o")
    except OSError:
        pass
    time.sleep(5)
    os._exit(1)  # PID 1 exits: the kernel panics and reboots (panic=-1)


def main() -> None:
    say(
        f"start at {uptime()} (init handed over at {os.environ.get('VMCRI_INIT_UPTIME', '?')}), "
        f"image {os.environ.get('VMCRI_IMAGE_VERSION', '?')[:12]}, pid {os.getpid()}"
    )
    os.makedirs(WORK, exist_ok=True)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("python", c_python),
        ("python-startup", c_python_startup),
        ("protobuf", c_protobuf),
        ("vmcri-package", c_vmcri_package),
        ("mounts", c_mounts),
        ("cgroup2", c_cgroup2),
        ("runc-version", c_runc_version),
        ("runc-container", c_runc_container),
        ("crun-version", c_crun_version),
        ("crun-container", c_crun_container),
        ("9p", c_9p),
        ("overlay", c_overlay),
        ("virtio-serial", c_virtio_serial),
        ("vsock", c_vsock),
        ("ip", c_ip),
        ("rootfs-read", c_rootfs_read),
        ("memory", c_memory),
    ]
    for name, fn in checks:
        check(name, fn)
    verdict = "PASS" if RESULTS["FAIL"] == 0 else "FAIL"
    say(
        f"RESULT {verdict} ({RESULTS['OK']} ok, {RESULTS['FAIL']} failed, "
        f"{RESULTS['SKIP']} skipped) at {uptime()}"
    )


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        say("RESULT FAIL (self-check crashed)")
    finally:
        power_off()
