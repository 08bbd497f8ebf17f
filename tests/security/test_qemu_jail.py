"""A pod's QEMU taken over by its guest (real daemon, real VMs): what it can still reach.

QEMU parses everything the guest sends (virtqueues, 9p messages, a migration stream): a
bug there gives the guest QEMU's identity on the host. ``launcher.py`` runs each pod's QEMU
in a jail (a root holding only its own pod's files, the guest image and the system's
binaries), as a uid of its own, with the three capabilities its 9p server needs. Here a
probe takes a running QEMU's place exactly (its mount namespace and root, its uid, group
and capabilities, read from ``/proc``) and tries what an attacker in it would: another
pod's disk and layers, the image store, the host's secrets and state, writing the layers
and the guest image it reads, signalling the daemon and the other pod's QEMU, the kernel's
writable knobs. Its own pod's files it must reach, or the probe proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.host_cgroups import qemu_pid
from vmcri.handlers.vm import launcher

pytestmark = pytest.mark.integration

CONFIG = """
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
writable_layer_mib = 128
"""

# Runs as root, single-threaded: enters the QEMU's mount namespace (which makes its root
# the jail's), becomes its uid and group with its capabilities (ambient, as the launcher
# leaves them), then reports the errno of each attempt (0: it worked).
PROBE = r"""
import ctypes, errno, json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import launcher
pid, uid, gid, caps = (int(a) for a in sys.argv[2:6])
attempts = json.loads(sys.argv[6])
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
if libc.setns(fd, 0x00020000) != 0:
    raise OSError(ctypes.get_errno(), "setns")
os.chdir("/")
launcher.become(uid, gid, frozenset(c for c in range(64) if caps >> c & 1))
results = {}
for name, (kind, target, flags) in attempts.items():
    try:
        if kind == "open":
            os.close(os.open(target, flags | os.O_CLOEXEC, 0o600))
        elif kind == "kill":
            os.kill(int(target), 0)
        elif kind == "list":
            os.listdir(target)
        results[name] = 0
    except OSError as exc:
        results[name] = exc.errno
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("jail"), NO_POD_NETWORK + CONFIG) as env:
        yield env


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _pod_with_container(env: VmEnv, name: str) -> str:
    sandbox_id, pod = env.run_pod(name)
    env.start(env.create(sandbox_id, pod, "c", ["sleep", "600"]))
    return sandbox_id


def test_a_taken_over_qemu_reaches_its_own_pods_files_and_nothing_else(env: VmEnv) -> None:
    mine, other = _pod_with_container(env, "mine"), _pod_with_container(env, "other")
    pid, other_pid = qemu_pid(mine), qemu_pid(other)

    # Its identity: a uid of its own (no other QEMU's, no user's), the file server's group,
    # no supplementary group, the three capabilities (bounding set too), no new privileges.
    status = _status(pid)
    uid = launcher.QEMU_UID_BASE + pid
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(launcher.FILE_SERVER_GID)] * 4
    assert status["Groups"].strip() == ""
    caps = sum(1 << c for c in launcher.QEMU_CAPS)
    assert int(status["CapEff"], 16) == caps and int(status["CapBnd"], 16) == caps
    assert status["NoNewPrivs"].strip() == "1"
    assert _status(other_pid)["Uid"].split()[0] == str(launcher.QEMU_UID_BASE + other_pid)

    root, state = env.tmp / "root", env.tmp / "state"
    disks, other_disks = root / "backends" / "vm" / mine, root / "backends" / "vm" / other
    links = sorted((disks / "layers").glob("*/layer.erofs"))
    store = sorted((root / "images" / "layers").glob("*/layer.erofs"))
    assert links and store, (links, store)
    guest_root = Path(__file__).resolve().parents[2] / "guest" / "build" / "rootfs.img"
    rw, ro, create = os.O_RDWR, os.O_RDONLY, os.O_WRONLY | os.O_CREAT
    attempts = {
        # its own: the writable disk read-write, each layer and the guest image read-only
        "own writable disk": ("open", str(disks / "writable.img"), rw),
        "own layer, read": ("open", str(links[0]), ro),
        "guest image, read": ("open", str(guest_root), ro),
        # the same, written: read-only however its capabilities bypass modes
        "own layer, write": ("open", str(links[0]), rw),
        "guest image, write": ("open", str(guest_root), rw),
        "a file in the jail's root": ("open", "/planted", create),
        "a file in /usr": ("open", "/usr/planted", create),
        # another pod's files, the image store, the runtime's and the host's
        "other pod's writable disk": ("open", str(other_disks / "writable.img"), ro),
        "other pod's layers": ("list", str(other_disks / "layers"), 0),
        "the image store's layer": ("open", str(store[0]), ro),
        "other pod's state": ("list", str(state / "backends" / "vm" / other), 0),
        "the daemon's socket": ("open", str(env.tmp / "run" / "vmcri.sock"), ro),
        "the host's /etc/shadow": ("open", "/etc/shadow", ro),
        "the host's /root": ("list", "/root", 0),
        "the kernel's knobs": ("open", "/proc/sys/vm/drop_caches", os.O_WRONLY),
        "the cgroup tree": ("open", "/sys/fs/cgroup/cgroup.procs", os.O_WRONLY),
        # processes: the daemon and the other pod's QEMU
        "signal the daemon": ("kill", str(env.daemon.process.pid), 0),
        "signal the other QEMU": ("kill", str(other_pid), 0),
    }
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(Path(launcher.__file__).parent), str(pid), str(uid),
         str(launcher.FILE_SERVER_GID), str(caps), json.dumps(attempts)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    errors = {name: os.strerror(e) if e else "ok" for name, e in json.loads(probe.stdout).items()}
    enoent, erofs = os.strerror(2), os.strerror(30)
    assert errors == {
        "own writable disk": "ok",
        "own layer, read": "ok",
        "guest image, read": "ok",
        "own layer, write": erofs,
        "guest image, write": erofs,
        "a file in the jail's root": erofs,
        "a file in /usr": erofs,
        "other pod's writable disk": enoent,
        "other pod's layers": enoent,
        "the image store's layer": enoent,
        "other pod's state": enoent,
        "the daemon's socket": enoent,
        "the host's /etc/shadow": enoent,
        "the host's /root": enoent,
        "the kernel's knobs": os.strerror(13),  # not root; and read-only besides
        "the cgroup tree": enoent,
        "signal the daemon": os.strerror(1),
        "signal the other QEMU": os.strerror(1),
    }
    # Nothing of the jail shows on the host: its root is mounted in QEMU's namespace only.
    assert not any(env.state_dir(mine).joinpath("jail").iterdir())
