#!/usr/bin/python3 -IS
"""The launcher libvirt runs instead of QEMU and virtiofsd: confine, then exec the real one.

A VM pod's share is served by a root process (QEMU for 9p, virtiofsd for virtio-fs) that
creates and changes host files as the guest asks. The guest's root is not the node's root,
so what it plants must not become a privilege on the node: a setuid/setgid file, a device
node, a file capability. libvirt names this file as the domain's ``<emulator>`` and as
virtiofsd's ``<binary path=...>`` (per-domain XML: the shared libvirtd is not reconfigured),
through the symlinks in ``bin/`` whose names say the role. Before it execs the real binary
with the same arguments, the launcher

* narrows the capability bounding, permitted and effective sets (and empties the
  inheritable and ambient ones) to what the role needs: QEMU's 9p passthrough keeps
  CAP_CHOWN, CAP_DAC_OVERRIDE and CAP_FOWNER, so no CAP_MKNOD (no
  device nodes), no CAP_SETFCAP (no file capabilities), no CAP_FSETID, no CAP_SYS_ADMIN
  (no ``trusted.*`` xattrs), no network, ptrace, kill, module or raw-I/O capability.
  virtiofsd sets up its own sandbox (namespaces, pivot_root) and then drops to its own
  list, told to leave out CAP_MKNOD and CAP_SETFCAP (``-o modcaps=``): its bounding set
  keeps what that needs and no more;
* sets no_new_privs (nothing it execs gains privileges);
* installs a seccomp filter (stacked with QEMU's own ``-sandbox`` and virtiofsd's: the
  stricter answer wins) that refuses with EPERM: S_ISUID or S_ISGID in the mode of open,
  openat, creat, mknod and mknodat; a character or block device in mknod/mknodat; S_ISUID
  in the mode of chmod, fchmod, fchmodat and fchmodat2, and S_ISGID there too for
  virtiofsd. openat2 (its mode is in a struct the filter cannot read) fails with ENOSYS,
  so a caller falls back to openat; another architecture, or the x32 ABI, is refused.

QEMU may not refuse S_ISGID in chmod: its 9p server chmods every directory it creates to
the mode the guest sent, which carries S_ISGID inside a setgid directory (kubelet makes
fsGroup volumes so), and mkdir there would fail. So QEMU runs with group
``FILE_SERVER_GID``, no supplementary groups and no CAP_FSETID, and may not chown a file
to that group: the kernel drops S_ISGID from every chmod of a file whose group is not
the caller's, which is then every file QEMU serves. The price, over 9p only: no
directory keeps S_ISGID through a chmod either, so a directory made in a setgid one (the
host kernel gives it the bit, QEMU's chmod takes it away) passes the group on to its own
files but not further down. virtiofsd creates files with the guest's ids and the host
kernel's own setgid inheritance, and chmods nothing after mkdir: there chmod refuses both.

libvirt also runs the emulator to probe its capabilities (QMP, as its unprivileged user):
the launcher is transparent (same argv, environment and fds), narrows only what the caller
has, and never execs anything unconfined: any failure exits 1 with the reason on stderr.

This file runs under the system interpreter in isolated mode without ``site`` (no
environment, no user paths, nothing imported but the standard library), from its own
path in the source tree; the daemon imports it for the paths and the policy.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

BIN_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "bin")
QEMU = "qemu-system-x86_64"  # the role names: the symlinks in bin/ and the real binaries
VIRTIOFSD = "virtiofsd"
QEMU_CANDIDATES = ("/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm")
VIRTIOFSD_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")  # Rust, C

# capabilities(7) numbers
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24

# QEMU's group (9p): one no file on the node has, and the guest may not give one (see above).
FILE_SERVER_GID = 2147483646  # 2**31 - 2: tools choke on ids above 2**31 - 1
# A jailed QEMU's uid: this plus its pid, so no two running QEMUs share one (signals,
# ptrace, /proc), and none is a uid a file or a user on the node has (pid_max is at most
# 2**22: the last is 2**31 - 2**23 + 2**22, below FILE_SERVER_GID).
QEMU_UID_BASE = 2**31 - 2**23
# The launcher's own options (never passed on): what QEMU's root holds (``jail_binds``).
# Plain options, no JSON: the launcher imports nothing it need not (its start is every pod's).
JAIL_ROOT = "-vmcri-jail-root"  # an empty directory of the VM's own: the jail's mount point
JAIL_WRITABLE = "-vmcri-jail-rw"  # a path as the host has it (repeated)
JAIL_READONLY = "-vmcri-jail-ro"  # a path read-only (repeated)
JAIL_OPTIONS = {JAIL_ROOT: "root", JAIL_WRITABLE: "rw", JAIL_READONLY: "ro"}
# What every QEMU needs of the host, read-only: its binary, libraries and firmware (/usr;
# /lib*, /bin and /sbin are links into it on a merged /usr, directories elsewhere) and the
# dynamic linker's cache. The kernel's /proc and /sys go in read-only and without what is
# mounted below them (cgroups, debugfs, binfmt_misc); libvirt's /dev for the VM (libvirt
# makes it with only the nodes the VM's devices need) goes in as libvirt made it.
SYSTEM_READONLY = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
SYSTEM_FILES = ("/etc/ld.so.cache",)
KERNEL_VIEWS = ("/proc", "/sys")

# What 9p passthrough needs: read, write and search any file or directory (DAC_OVERRIDE,
# which covers DAC_READ_SEARCH but for open_by_handle_at, which the "local" driver does
# not use), give a file the guest's owner (CHOWN), set modes and times on files it does
# not own (FOWNER).
QEMU_CAPS = frozenset({CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER})
# QEMU's virtiofsd 7.2 keeps CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID (it takes the
# guest's uid/gid to create files, and drops FSETID when the guest asks to clear setuid
# on write), plus MKNOD and SETFCAP, which modcaps removes; it needs SYS_ADMIN for its
# namespace sandbox, SYS_RESOURCE to raise its open-file limit and SETPCAP to apply its
# own capability sets (libcap-ng; without it virtiofsd dies on its own seccomp filter).
VIRTIOFSD_CAPS = frozenset(
    {
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FOWNER,
        CAP_FSETID,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETPCAP,
        CAP_SYS_ADMIN,
        CAP_SYS_RESOURCE,
    }
)
QEMU_VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # QEMU 7.2's C one: the one tested here
# modcaps in each virtiofsd's syntax: QEMU's C one takes -o options, the Rust one a flag.
C_VIRTIOFSD_ARGS: tuple[str, ...] = ("-o", "modcaps=-mknod:-setfcap")
RUST_VIRTIOFSD_ARGS = ("--modcaps=-mknod:-setfcap",)

PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# x86_64 system call numbers (asm/unistd_64.h) and the argument each one's mode or
# group is in.
CHMOD_MODE_ARG = {
    90: 1,  # chmod(path, mode)
    91: 1,  # fchmod(fd, mode)
    268: 2,  # fchmodat(dirfd, path, mode, flags)
    452: 2,  # fchmodat2(dirfd, path, mode, flags)
}
# The mode of open/openat counts with O_CREAT or O_TMPFILE only, and glibc passes 0
# without them, so it is checked whatever the flags.
CREATE_MODE_ARG = {
    2: 2,  # open(path, flags, mode)
    85: 1,  # creat(path, mode)
    257: 3,  # openat(dirfd, path, flags, mode)
}
MKNOD_MODE_ARG = {133: 1, 259: 2}  # mknod(path, mode, dev), mknodat(dirfd, path, mode, dev)
CHOWN_GID_ARG = {
    92: 2,  # chown(path, uid, gid)
    93: 2,  # fchown(fd, uid, gid)
    94: 2,  # lchown(path, uid, gid)
    260: 3,  # fchownat(dirfd, path, uid, gid, flags)
}
SYS_OPENAT2 = 437
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

S_ISUID = 0o4000
S_ISGID = 0o2000
SETID = S_ISUID | S_ISGID
S_IFMT = 0o170000
S_IFCHR = 0o020000
S_IFBLK = 0o060000
EPERM = 1
ENOSYS = 38

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# classic BPF opcodes
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
RET = 0x06  # BPF_RET | BPF_K
# struct seccomp_data: nr, arch, instruction_pointer, args[6]; the low half of an
# argument (little endian) is all a mode_t is.
OFF_NR = 0
OFF_ARCH = 4


def _arg(index: int) -> int:
    return 16 + 8 * index


Insn = tuple[int, "int | str", "int | str", int]  # code, jt, jf (label or 0), k


def mode_filter(chmod_bits: int = SETID, refused_gid: int | None = None) -> bytes:
    """The seccomp program (struct sock_filter[]), assembled with labels resolved.

    ``chmod_bits``: the bits chmod may not set (creation modes may set neither);
    ``refused_gid``: a group no file may be given (chown).
    """
    refuse, allow = SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
    code: list[tuple[str, Insn]] = [
        ("", (LD_ABS, 0, 0, OFF_ARCH)),
        ("", (JEQ, 0, "kill", AUDIT_ARCH_X86_64)),
        ("", (LD_ABS, 0, 0, OFF_NR)),
        ("", (JGE, "nosys", 0, X32_SYSCALL_BIT)),
        ("", (JEQ, "nosys", 0, SYS_OPENAT2)),
    ]
    checks = [("chmod", CHMOD_MODE_ARG), ("create", CREATE_MODE_ARG), ("mknod", MKNOD_MODE_ARG)]
    if refused_gid is not None:
        checks.append(("chown", CHOWN_GID_ARG))
    for kind, args in checks:
        for nr, index in sorted(args.items()):
            code.append(("", (JEQ, f"{kind}{index}", 0, nr)))
    code.append(("", (RET, 0, 0, allow)))
    for kind, args in checks:
        for index in sorted(set(args.values())):
            code.append((f"{kind}{index}", (LD_ABS, 0, 0, _arg(index))))
            if kind == "chmod":
                code.append(("", (JSET, "refuse", "allow", chmod_bits)))
            elif kind == "create":
                code.append(("", (JSET, "refuse", "allow", SETID)))
            elif kind == "chown":
                code.append(("", (JEQ, "refuse", "allow", refused_gid or 0)))
            else:
                code.append(("", (JSET, "refuse", 0, SETID)))
                code.append(("", (AND, 0, 0, S_IFMT)))
                code.append(("", (JEQ, "refuse", 0, S_IFCHR)))
                code.append(("", (JEQ, "refuse", "allow", S_IFBLK)))
    code += [
        ("allow", (RET, 0, 0, allow)),
        ("refuse", (RET, 0, 0, refuse)),
        ("nosys", (RET, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)),
        ("kill", (RET, 0, 0, SECCOMP_RET_KILL_PROCESS)),
    ]
    labels = {label: at for at, (label, _) in enumerate(code) if label}
    program = b""
    for at, (_, (op, jt, jf, k)) in enumerate(code):
        jumps = [labels[j] - at - 1 if isinstance(j, str) else j for j in (jt, jf)]
        program += struct.pack("=HBBI", op, jumps[0], jumps[1], k)
    return program


def real_binary(role: str) -> str:
    """The binary a role execs: the first candidate installed (virtiofsd: then PATH)."""
    candidates = QEMU_CANDIDATES if role == QEMU else VIRTIOFSD_CANDIDATES
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    if role != VIRTIOFSD:
        return ""
    import shutil  # only here: the launcher's start time is every pod's

    return shutil.which(VIRTIOFSD) or ""


def launcher_path(role: str) -> str:
    """What the domain XML names for a role: the launcher, by its role's symlink."""
    return os.path.join(BIN_DIR, role)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _bounding() -> set[int]:
    libc, caps, cap = _libc(), set(), 0
    while (present := libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0)) >= 0:  # EINVAL past the last
        if present:
            caps.add(cap)
        cap += 1
    return caps


def narrow_capabilities(keep: frozenset[int]) -> None:
    """Bounding, permitted and effective sets to ``keep`` (at most); inheritable and ambient
    empty. The bounding set needs CAP_SETPCAP to change: without it (libvirt's unprivileged
    probe) the caller has nothing to narrow beyond its permitted set, which always can be."""
    libc = _libc()
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), data), "capget")
    if data[0].effective & (1 << CAP_SETPCAP):
        for cap in sorted(_bounding() - keep):
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    for word in range(2):
        mask = sum(1 << (cap - 32 * word) for cap in keep if cap // 32 == word)
        data[word].permitted &= mask
        data[word].effective = data[word].permitted
        data[word].inheritable = 0  # the ambient set follows (it must be within it)
    _check(libc.capset(ctypes.byref(header), data), "capset")


def install_mode_filter(program: bytes) -> None:
    """no_new_privs, then the seccomp filter (which no_new_privs allows without privilege)."""
    libc = _libc()
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "seccomp filter",
    )


def _effective() -> int:
    libc = _libc()
    header, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capget(ctypes.byref(header), data), "capget")
    return int(data[0].effective) | int(data[1].effective) << 32


CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 32, 4096, 16384, 1 << 19
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155
READONLY_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV


# One path of the host in the jail, at the same path, and how (``jail_binds``): "rw" (as
# the host has it, with what is mounted below it), "ro" (read-only, nosuid, nodev, without
# what is mounted below it), "dev" (libvirt's /dev: below it too, nosuid) or "link" (a
# symlink, made again).
Bind = tuple[str, str]


def split_jail(args: list[str]) -> tuple[list[str], list[Bind]]:
    """QEMU's arguments without the launcher's own options, and those options as (path,
    kind) pairs, kind "root", "rw" or "ro" (empty: no jail). Raises ValueError."""
    rest: list[str] = []
    jail: list[Bind] = []
    at = 0
    while at < len(args):
        kind = JAIL_OPTIONS.get(args[at])
        if kind is None:
            rest.append(args[at])
            at += 1
            continue
        path = args[at + 1] if at + 1 < len(args) else ""
        if not (os.path.isabs(path) and os.path.normpath(path) == path != "/"):
            raise ValueError(f"{args[at]} takes an absolute, normal path that is not /")
        jail.append((path, kind))
        at += 2
    if jail and sum(kind == "root" for _, kind in jail) != 1:
        raise ValueError(f"a jail has one {JAIL_ROOT}")
    return rest, jail


def jail_binds(jail: list[Bind], home: str) -> list[Bind]:
    """What the jail's root holds (``jail`` without its root, and what QEMU needs of the
    system), parents before what is below them (a later bind below a path shows through
    it: a read-only directory inside a writable one)."""
    binds = [(path, kind) for path, kind in jail if kind != "root"]
    if os.path.isabs(home) and os.path.normpath(home) != "/" and os.path.isdir(home):
        binds.append((home, "rw"))  # libvirt's per-domain dir (HOME): its master key
    for path in SYSTEM_READONLY:
        if os.path.islink(path):
            binds.append((path, "link"))
        elif os.path.isdir(path):
            binds.append((path, "ro"))
    binds += [(p, "ro") for p in (*SYSTEM_FILES, *KERNEL_VIEWS) if os.path.exists(p)]
    binds.append(("/dev", "dev"))
    return sorted(set(binds), key=lambda bind: (bind[0].split("/"), bind[1]))


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def encode(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    libc = _libc()
    result = libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data))
    _check(result, f"mount {source} on {target}")


def _make_target(root: str, path: str, kind: str) -> str:
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if kind == "link":
        os.symlink(os.readlink(path), target)
    elif os.path.isdir(path):
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    return target


def enter_jail(jail: list[Bind], home: str) -> None:
    """Make this process's root a tmpfs holding only ``jail_binds``, in a mount namespace
    of its own: what QEMU may reach of the host is its own VM's files, the guest image and
    the system's binaries. Mounts the host makes later below a writable path (a volume
    below the pod's share) still appear: the namespace is a slave of the host's."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
    _mount(None, "/", None, MS_REC | MS_SLAVE)
    root = next(path for path, kind in jail if kind == "root")
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=256k")
    for path, kind in jail_binds(jail, home):
        target = _make_target(root, path, kind)
        if kind == "link":
            continue
        _mount(path, target, None, MS_BIND | (MS_REC if kind in ("rw", "dev") else 0))
        if kind == "ro":
            _mount(None, target, None, MS_REMOUNT | MS_BIND | READONLY_FLAGS)
        elif kind == "dev":
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID)
    _mount(None, root, None, MS_REMOUNT | MS_BIND | READONLY_FLAGS | MS_NOEXEC)
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")


def become(uid: int, gid: int, keep: frozenset[int]) -> None:
    """Run as ``uid``:``gid`` with no supplementary group and only ``keep`` (ambient, so
    they survive the exec of a binary without file capabilities); the bounding set is
    ``keep`` too."""
    libc = _libc()
    for cap in sorted(_bounding() - keep):
        _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    for word in range(2):
        mask = sum(1 << (cap - 32 * word) for cap in keep if cap // 32 == word)
        data[word].permitted = data[word].effective = data[word].inheritable = mask
    _check(libc.capset(ctypes.byref(header), data), "capset")
    for cap in sorted(keep):
        _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), f"ambient {cap}")


def confine(role: str, target: str, jail: list[Bind]) -> tuple[str, ...]:
    """Narrow this process for ``role``, which execs ``target`` next and inherits all of
    it; the arguments to add to its command line. ``jail``: QEMU's (``split_jail``)."""
    if role == VIRTIOFSD:  # virtiofsd cannot change its group: it takes the guest's
        if target == QEMU_VIRTIOFSD:
            narrow_capabilities(VIRTIOFSD_CAPS)  # what it needs to start is known (tested)
            extra = C_VIRTIOFSD_ARGS
        else:  # another one drops by modcaps alone; the filter holds for any
            extra = RUST_VIRTIOFSD_ARGS
        install_mode_filter(mode_filter())
        return extra
    privileged = bool(_effective() & (1 << CAP_SYS_ADMIN))  # libvirt's probe is not
    if jail and privileged:
        enter_jail(jail, os.environ.get("HOME", ""))
        become(QEMU_UID_BASE + os.getpid(), FILE_SERVER_GID, QEMU_CAPS)
    else:
        if privileged:
            os.setgroups([])
            os.setresgid(FILE_SERVER_GID, FILE_SERVER_GID, FILE_SERVER_GID)
        narrow_capabilities(QEMU_CAPS)
    install_mode_filter(mode_filter(chmod_bits=S_ISUID, refused_gid=FILE_SERVER_GID))
    return ()


def main(argv: list[str]) -> int:
    role = os.path.basename(argv[0])
    try:
        if role not in (QEMU, VIRTIOFSD):
            raise ValueError(f"run as {QEMU} or {VIRTIOFSD} (bin/), not {role!r}")
        target = real_binary(role)
        if not target:
            raise FileNotFoundError(f"no {role} binary installed")
        args, jail = split_jail(argv[1:]) if role == QEMU else (argv[1:], [])
        extra = confine(role, target, jail)
        os.execv(target, [target, *args, *extra])
    except (OSError, ValueError) as exc:
        print(f"vmcri launcher: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
