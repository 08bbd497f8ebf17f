"""The launcher: its seccomp filter and capability narrowing, each tried in a child process.

The filter needs no privilege (no_new_privs first), so every case runs as any user: a
child installs it and reports the errno of each system call it tries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.domain_spec import spec
from vmcri.handlers.vm import launcher
from vmcri.handlers.vm.domain import Share
from vmcri.handlers.vm.render import render_domain

LAUNCHER = Path(launcher.__file__)

CHILD = """
import ctypes, errno, json, os, sys
sys.path.insert(0, {directory!r})
import launcher
{setup}
os.chdir({workdir!r})
libc = ctypes.CDLL(None, use_errno=True)

def errno_of(call):
    try:
        call()
        return 0
    except OSError as exc:
        return exc.errno

def openat2(path):
    how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o644, 0)
    if libc.syscall(437, -100, path.encode(), how, 24) < 0:
        return ctypes.get_errno()
    return 0

open("file", "w").close()
fd = os.open("file", os.O_RDONLY)
dirfd = os.open(".", os.O_RDONLY)
other_gid = 1234 if os.geteuid() == 0 else os.getegid()
results = {{
    "chmod 0755": errno_of(lambda: os.chmod("file", 0o755)),
    "chmod 4755": errno_of(lambda: os.chmod("file", 0o4755)),
    "chmod 2755": errno_of(lambda: os.chmod("file", 0o2755)),
    "chmod 6755": errno_of(lambda: os.chmod("file", 0o6755)),
    "fchmod 4755": errno_of(lambda: os.fchmod(fd, 0o4755)),
    "fchmodat 2755": errno_of(lambda: os.chmod("file", 0o2755, dir_fd=dirfd)),
    "open O_CREAT 0644": errno_of(lambda: os.close(os.open("plain", os.O_CREAT | os.O_WRONLY))),
    "open O_CREAT 4755": errno_of(lambda: os.open("suid", os.O_CREAT | os.O_WRONLY, 0o4755)),
    "open O_CREAT 2755": errno_of(lambda: os.open("sgid", os.O_CREAT | os.O_WRONLY, 0o2755)),
    "mknod fifo": errno_of(lambda: os.mkfifo("fifo", 0o600)),
    "mknod char": errno_of(lambda: os.mknod("null", 0o600 | 0o020000, os.makedev(1, 3))),
    "mknod block": errno_of(lambda: os.mknod("loop", 0o600 | 0o060000, os.makedev(7, 0))),
    "mknod setgid fifo": errno_of(lambda: os.mknod("sfifo", 0o2600 | 0o010000)),
    "openat2": openat2("o2"),
    "mkdir": errno_of(lambda: os.mkdir("dir", 0o2775)),
    "chown to the file server's group": errno_of(lambda: os.chown("plain", -1, {gid})),
    "chown to another group": errno_of(lambda: os.chown("plain", -1, other_gid)),
}}
if os.geteuid() == 0:  # a file of a group not the caller's, as every file 9p serves
    os.chown("file", -1, 1234)
    os.chmod("file", 0o755)
    results["chmod 2755 of another group's file"] = errno_of(lambda: os.chmod("file", 0o2755))
status = dict(l.split(":\\t") for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
results["modes"] = {{n: oct(os.lstat(n).st_mode) for n in os.listdir(".")}}
results["status"] = {{k: status[k] for k in status if k.startswith("Cap") or k == "NoNewPrivs"}}
print(json.dumps(results))
"""


def _child(tmp_path: Path, setup: str) -> dict[str, object]:
    code = CHILD.format(
        directory=str(LAUNCHER.parent),
        setup=setup,
        workdir=str(tmp_path),
        gid=launcher.FILE_SERVER_GID,
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


REFUSED_BY_BOTH = {
    "chmod 4755",
    "chmod 6755",
    "fchmod 4755",
    "open O_CREAT 4755",
    "open O_CREAT 2755",
    "mknod char",
    "mknod block",
    "mknod setgid fifo",
}
ALLOWED_BY_BOTH = {
    "chmod 0755",
    "open O_CREAT 0644",
    "mknod fifo",
    "mkdir",
    "chown to another group",
}


def _errors(result: dict[str, object], refused: set[str], allowed: set[str]) -> None:
    for name in refused:
        assert result[name] == 1, (name, result)  # EPERM
    for name in allowed:
        assert result[name] == 0, (name, result)
    assert result["openat2"] == 38  # ENOSYS: callers fall back to openat, which is filtered
    status = result["status"]
    assert isinstance(status, dict) and status["NoNewPrivs"] == "1"


def test_virtiofsds_filter_refuses_setuid_setgid_and_devices(tmp_path: Path) -> None:
    result = _child(tmp_path, "launcher.install_mode_filter(launcher.mode_filter())")
    refused = REFUSED_BY_BOTH | {"chmod 2755", "fchmodat 2755"}
    _errors(result, refused, ALLOWED_BY_BOTH | {"chown to the file server's group"})
    modes = result["modes"]
    assert isinstance(modes, dict)
    assert set(modes) == {"file", "plain", "fifo", "dir"}, modes
    assert int(modes["file"], 8) & 0o7777 == 0o755


def test_qemus_filter_leaves_setgid_to_the_kernel_and_keeps_its_group_off_files(
    tmp_path: Path,
) -> None:
    result = _child(tmp_path, "launcher.confine(launcher.QEMU, launcher.QEMU_CANDIDATES[0], [])")
    allowed = ALLOWED_BY_BOTH | {"chmod 2755", "fchmodat 2755"}
    _errors(result, REFUSED_BY_BOTH | {"chown to the file server's group"}, allowed)
    modes = result["modes"]
    assert isinstance(modes, dict)
    if os.geteuid() == 0:  # the kernel dropped S_ISGID: QEMU has no CAP_FSETID
        assert result["chmod 2755 of another group's file"] == 0
        assert int(modes["file"], 8) & 0o7777 == 0o755, modes


def test_capabilities_narrow_to_the_role(tmp_path: Path) -> None:
    result = _child(tmp_path, "launcher.confine(launcher.QEMU, launcher.QEMU_CANDIDATES[0], [])")
    status = result["status"]
    assert isinstance(status, dict)
    mask = sum(1 << cap for cap in launcher.QEMU_CAPS)
    for field in ("CapEff", "CapPrm"):
        assert int(status[field], 16) & ~mask == 0, status
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0, status
    if os.geteuid() == 0:  # CAP_SETPCAP: the bounding set narrows too
        assert int(status["CapBnd"], 16) == mask == int(status["CapEff"], 16), status


def test_the_filter_is_arch_checked_and_every_jump_lands_inside() -> None:
    program = launcher.mode_filter()
    assert len(program) % 8 == 0
    count = len(program) // 8
    first = int.from_bytes(program[4:8], "little")
    assert first == 4  # loads seccomp_data.arch before anything else
    for index in range(count):
        code = int.from_bytes(program[index * 8 : index * 8 + 2], "little")
        jt, jf = program[index * 8 + 2], program[index * 8 + 3]
        if code & 0x07 == 0x05:  # BPF_JMP
            assert index + 1 + max(jt, jf) < count
    last = int.from_bytes(program[-8:-6], "little")
    assert last == 0x06  # the program ends on a return


def test_the_launcher_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["/somewhere/else", "--version"]) == 1
    assert "run as qemu-system-x86_64 or virtiofsd" in capsys.readouterr().err


def test_the_launcher_is_transparent() -> None:
    real = launcher.real_binary(launcher.QEMU)
    if not real:
        pytest.skip("no QEMU installed")
    through = subprocess.run(
        [launcher.launcher_path(launcher.QEMU), "--version"], capture_output=True, timeout=60
    )
    direct = subprocess.run([real, "--version"], capture_output=True, timeout=60)
    assert through.returncode == direct.returncode == 0, through.stderr
    assert through.stdout == direct.stdout


def test_both_roles_are_the_launcher() -> None:
    for role in (launcher.QEMU, launcher.VIRTIOFSD):
        path = Path(launcher.launcher_path(role))
        assert path.name == role
        assert path.resolve() == LAUNCHER.resolve()
    assert os.access(LAUNCHER, os.X_OK)
    assert LAUNCHER.read_text().startswith("#!/usr/bin/python3 -IS\n")


def test_the_domain_names_the_launcher() -> None:
    confined = dataclasses.replace(
        spec(),
        emulator="/opt/vmcri/bin/qemu-system-x86_64",
        virtiofsd="/opt/vmcri/bin/virtiofsd",
        shares=(Share("vmcri-pod", "/srv/share", False, "virtiofs"),),
    )
    domain = ET.fromstring(render_domain(confined))
    assert domain.findtext("devices/emulator") == "/opt/vmcri/bin/qemu-system-x86_64"
    binary = domain.find("devices/filesystem/binary")
    assert binary is not None and binary.get("path") == "/opt/vmcri/bin/virtiofsd"
    assert ET.fromstring(render_domain(spec())).find("devices/emulator") is None


def test_the_jail_options_are_taken_out_of_qemus_arguments() -> None:
    args = ["-name", "guest=x", launcher.JAIL_ROOT, "/p/jail", "-m", "416",
            launcher.JAIL_WRITABLE, "/p/share", launcher.JAIL_READONLY, "/g/vmlinux"]  # fmt: skip
    rest, jail = launcher.split_jail(args)
    assert rest == ["-name", "guest=x", "-m", "416"]
    assert jail == [("/p/jail", "root"), ("/p/share", "rw"), ("/g/vmlinux", "ro")]
    assert launcher.split_jail(["-m", "416"]) == (["-m", "416"], [])


@pytest.mark.parametrize(
    "args",
    [
        [launcher.JAIL_ROOT],  # no value
        [launcher.JAIL_ROOT, "relative"],
        [launcher.JAIL_ROOT, "/"],
        [launcher.JAIL_ROOT, "/p/../etc"],
        [launcher.JAIL_WRITABLE, "/p/share"],  # no root
        [launcher.JAIL_ROOT, "/a", launcher.JAIL_ROOT, "/b"],
    ],
)
def test_a_jail_that_is_not_exactly_one_root_and_normal_paths_is_refused(args: list[str]) -> None:
    with pytest.raises(ValueError):
        launcher.split_jail(args)


def test_the_jail_holds_the_vms_paths_and_the_systems_parents_first(tmp_path: Path) -> None:
    home = tmp_path / "domain-1-x"
    home.mkdir()
    jail = [("/p/jail", "root"), ("/p/disk", "rw"), ("/p/disk/layers", "ro"), ("/g/k", "ro")]
    binds = launcher.jail_binds(jail, str(home))
    paths = [path for path, _ in binds]
    assert ("/p/jail", "root") not in binds and (str(home), "rw") in binds
    assert paths.index("/p/disk") < paths.index("/p/disk/layers")
    assert ("/dev", "dev") in binds and ("/proc", "ro") in binds and ("/sys", "ro") in binds
    assert ("/usr", "ro") in binds
    assert all(kind in ("link", "ro") for path, kind in binds if path in launcher.SYSTEM_READONLY)
    assert not any(path in ("/", "/etc", "/root", "/var", "/run") for path in paths)
    assert (str(home), "rw") not in launcher.jail_binds(jail, "/")  # never the host's root
