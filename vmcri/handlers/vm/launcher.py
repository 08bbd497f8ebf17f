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

PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
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


def confine(role: str, target: str) -> tuple[str, ...]:
    """Narrow this process for ``role``, which execs ``target`` next and inherits all of
    it; the arguments to add to its command line."""
    if role == VIRTIOFSD:  # virtiofsd cannot change its group: it takes the guest's
        if target == QEMU_VIRTIOFSD:
            narrow_capabilities(VIRTIOFSD_CAPS)  # what it needs to start is known (tested)
            extra = C_VIRTIOFSD_ARGS
        else:  # another one drops by modcaps alone; the filter holds for any
            extra = RUST_VIRTIOFSD_ARGS
        install_mode_filter(mode_filter())
        return extra
    if _effective() & (1 << CAP_SETGID):  # root, as for 9p (libvirt's probe is not)
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
        extra = confine(role, target)
        os.execv(target, [target, *argv[1:], *extra])
    except (OSError, ValueError) as exc:
        print(f"vmcri launcher: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
