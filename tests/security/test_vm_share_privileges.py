"""A guest's root plants host-root privileges through a writable hostPath volume.

The file server of a VM pod's share (QEMU for 9p, virtiofsd for virtio-fs) runs as the
node's root. Without the launcher (``vmcri/handlers/vm/launcher.py``) a container's root
could write a file into a writable hostPath volume and ``chmod 4755`` it: on the node it
was root's and setuid, and any local user ran it as root. Here the guest tries each way
of planting a privilege (setuid, setgid, a device node, a file capability) over both
shares, and the node's copy of the volume must hold none of them; the file servers run
with the narrowed capability sets.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.vm.conftest import BOOT_TIMEOUT_S, VmEnv, vm_daemon
from tests.support.setcap_elf import setcap_program
from vmcri.api import api_pb2 as pb
from vmcri.handlers.vm.domain import domain_name, find_virtiofsd
from vmcri.handlers.vm.launcher import FILE_SERVER_GID, QEMU_CAPS, VIRTIOFSD_CAPS

pytestmark = pytest.mark.integration

VIRTIOFS = """
[runtimes.vm]
backend = "vm"
[runtimes.vm.options]
shared_fs = "virtiofs"
template = "off"
"""

# Each attack prints "<name>=<exit code>". The container is privileged, so the guest
# itself refuses none of them (it would refuse a device node to an unprivileged one):
# whatever stops them is on the host.
REFUSED = """
cd /data
echo x > suid && chmod 4755 suid; echo chmod-setuid=$?
echo x > suid-sym && chmod u+s suid-sym; echo chmod-symbolic=$?
mknod null c 1 3; echo mknod-char=$?
mknod disk b 7 0; echo mknod-block=$?
echo x > capped && /tools/setcap capped; echo setcap=$?
"""
# Refused over virtiofs; over 9p the host kernel drops the bit (exit 0, no setgid on the node).
SETGID = """
cd /data
echo x > sgid && chmod 2755 sgid; echo chmod-setgid=$?
echo x > sgid-root && chown 0:0 sgid-root && chmod g+s sgid-root; echo chmod-setgid-root=$?
"""
# What a container may still do there, so the refusals above are not a broken share:
# among them, a directory in a setgid one (kubelet's fsGroup volumes), and its files.
ALLOWED = """
cd /data
echo x > plain && chmod 0750 plain; echo chmod-plain=$?
mkdir dir && chmod 1777 dir; echo sticky-dir=$?
mkdir fsgroup/sub; echo mkdir-in-setgid-dir=$?
echo x > fsgroup/sub/file; echo file-in-it=$?
echo x > fsgroup/file; echo file-in-setgid-dir=$?
"""
FS_GROUP = 2000


def _results(output: bytes) -> dict[str, int]:
    pairs = (line.split("=", 1) for line in output.decode().splitlines() if "=" in line)
    return {name: int(code) for name, code in pairs}


def _caps(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.split(":\t") for line in status if line.startswith("Cap"))
    return {name: int(value, 16) for name, value in fields}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone meanwhile
        return ""


def _pids_of(name: str) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and name in _cmdline(int(entry.name)).split(" ", 1)[0]
    ]


def _mask(caps: frozenset[int]) -> int:
    return sum(1 << cap for cap in caps)


def _privileges_on_host(root: Path) -> list[str]:
    """Every setuid/setgid non-directory, device node or file capability below ``root``."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            setid = info.st_mode & (stat.S_ISUID | stat.S_ISGID)
            if setid and not stat.S_ISDIR(info.st_mode):  # a directory's bits give nothing
                found.append(f"{path}: mode {oct(info.st_mode)}")
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                found.append(f"{path}: device node")
            try:
                os.getxattr(path, "security.capability", follow_symlinks=False)
                found.append(f"{path}: file capability")
            except OSError as exc:
                assert exc.errno in (errno.ENODATA, errno.EOPNOTSUPP), exc
    return found


def _exec(env: VmEnv, container_id: str, script: str) -> dict[str, int]:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=["sh", "-c", script], timeout=120)
    result = env.runtime.ExecSync(request, timeout=150)
    codes = _results(result.stdout)
    assert len(codes) == script.count("=$?"), (result.stdout, result.stderr)
    return codes


def _plant(env: VmEnv, tmp: Path, name: str) -> tuple[str, str, dict[str, int], Path]:
    """A privileged pod whose root container has a writable hostPath volume (with a
    setgid directory, as kubelet makes for fsGroup) and the setcap tool; each attack in
    it must fail, and the node's copy of the volume must hold no privilege."""
    volume, tools = tmp / "volume", tmp / "tools"
    volume.mkdir()
    (volume / "fsgroup").mkdir()
    os.chown(volume / "fsgroup", 0, FS_GROUP)
    (volume / "fsgroup").chmod(0o2775)
    tools.mkdir()
    (tools / "setcap").write_bytes(setcap_program())
    (tools / "setcap").chmod(0o755)
    privileged = pb.LinuxSandboxSecurityContext(privileged=True)
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname=name,
        log_directory=str(env.tmp / "logs" / name),
        linux=pb.LinuxPodSandboxConfig(security_context=privileged),
    )
    request = pb.RunPodSandboxRequest(config=config, runtime_handler="vm")
    sandbox_id = env.runtime.RunPodSandbox(request, timeout=BOOT_TIMEOUT_S).pod_sandbox_id
    env.sandboxes.append(sandbox_id)
    mounts = [
        pb.Mount(container_path="/data", host_path=str(volume)),
        pb.Mount(container_path="/tools", host_path=str(tools), readonly=True),
    ]
    linux = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(privileged=True)
    )
    container_id = env.create(sandbox_id, config, "c", ["sleep", "600"], mounts, linux)
    env.start(container_id)

    refused = _exec(env, container_id, REFUSED)
    assert all(code != 0 for code in refused.values()), refused
    setgid = _exec(env, container_id, SETGID)
    allowed = _exec(env, container_id, ALLOWED)
    assert all(code == 0 for code in allowed.values()), allowed

    assert (volume / "plain").stat().st_mode & 0o7777 == 0o750
    assert (volume / "suid").read_text() == "x\n"  # the file is there, without the bit
    assert (volume / "fsgroup" / "file").stat().st_gid == FS_GROUP
    assert (volume / "fsgroup" / "sub").stat().st_gid == FS_GROUP
    assert _privileges_on_host(volume) == []
    assert env.pod_state(sandbox_id) == pb.PodSandboxState.SANDBOX_READY
    return sandbox_id, container_id, setgid, volume


@pytest.fixture(scope="module")
def nine_p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    with vm_daemon(tmp_path_factory.mktemp("p9"), NO_POD_NETWORK) as env:
        yield env


@pytest.fixture(scope="module")
def virtiofs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    if not find_virtiofsd():
        pytest.skip("no virtiofsd binary on this host")
    config = NO_POD_NETWORK + VIRTIOFS
    with vm_daemon(tmp_path_factory.mktemp("pvfs"), config, wait_template=False) as env:
        yield env


def test_a_9p_guest_plants_no_privilege_on_the_node(nine_p: VmEnv, tmp_path: Path) -> None:
    sandbox_id, container_id, setgid, volume = _plant(nine_p, tmp_path, "privs-9p")
    assert setgid == {"chmod-setgid": 0, "chmod-setgid-root": 0}  # dropped by the kernel
    # ... unless the file had QEMU's own group: no file may have it.
    own = f"cd /data; echo x > own && chown 0:{FILE_SERVER_GID} own; echo chown=$?"
    assert _exec(nine_p, container_id, own) == {"chown": 1}
    assert (volume / "own").stat().st_gid == 0
    # The price (launcher.py): QEMU's chmod after mkdir dropped the bit the new directory
    # had from its setgid parent, so what is made in it takes its maker's group.
    sub = (volume / "fsgroup" / "sub").stat()
    assert not sub.st_mode & stat.S_ISGID
    assert (volume / "fsgroup" / "sub" / "file").stat().st_gid == 0
    assert nine_p.started_as(sandbox_id) == "restored"  # templates, the default, are on
    qemu = int(Path(f"/run/libvirt/qemu/{domain_name(sandbox_id)}.pid").read_text())
    caps = _caps(qemu)
    assert caps["CapBnd"] == caps["CapEff"] == caps["CapPrm"] == _mask(QEMU_CAPS), caps
    # Ambient (and so inheritable): how they reach QEMU, a uid of its own (test_qemu_jail.py);
    # the -sandbox libvirt gives QEMU (spawn=deny) refuses any exec they could reach.
    assert caps["CapInh"] == caps["CapAmb"] == _mask(QEMU_CAPS), caps
    status = Path(f"/proc/{qemu}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    lines = dict(line.split(":", 1) for line in status.splitlines())
    assert lines["Gid"].split() == [str(FILE_SERVER_GID)] * 4, lines["Gid"]
    assert lines["Groups"].strip() == "", lines["Groups"]


def test_a_virtiofs_guest_plants_no_privilege_on_the_node(virtiofs: VmEnv, tmp_path: Path) -> None:
    sandbox_id, _, setgid, volume = _plant(virtiofs, tmp_path, "privs-vfs")
    assert all(code != 0 for code in setgid.values()), setgid
    assert (volume / "fsgroup" / "sub").stat().st_mode & stat.S_ISGID  # the host kernel's
    assert (volume / "fsgroup" / "sub" / "file").stat().st_gid == FS_GROUP
    assert virtiofs.started_as(sandbox_id) == "cold"
    share = str(virtiofs.state_dir(sandbox_id) / "share")
    daemons = [pid for pid in _pids_of("virtiofsd") if share in _cmdline(pid)]
    assert daemons, "no virtiofsd serving " + share
    for pid in daemons:
        caps = _caps(pid)
        assert caps["CapBnd"] & ~_mask(VIRTIOFSD_CAPS) == 0, caps
        assert caps["CapEff"] & ((1 << 27) | (1 << 31)) == 0, caps  # no MKNOD, no SETFCAP
    # QEMU serves no files here, but opens the pod's hotplugged disks by path in the host's
    # 0700 directories (libvirt 9.0 passes a disk's descriptor at start-up only), so it runs
    # as root as for 9p, with the launcher's capabilities and no new privileges.
    qemu = int(Path(f"/run/libvirt/qemu/{domain_name(sandbox_id)}.pid").read_text())
    caps = _caps(qemu)
    assert caps["CapBnd"] == caps["CapEff"] == caps["CapPrm"] == _mask(QEMU_CAPS), caps
    assert "NoNewPrivs:\t1" in Path(f"/proc/{qemu}/status").read_text()
