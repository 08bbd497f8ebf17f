#!/usr/bin/env bash
# Build the vmcri guest image (kernel, initramfs, read-only root image).
#
# Usage: scripts/build-guest-image.sh [--force] [--check] [OUTDIR]
#
#   OUTDIR   default $VMCRI_GUEST_DIR, else guest/build/
#   --force  rebuild even when OUTDIR/VERSION is current (same as VMCRI_FORCE=1)
#   --check  build nothing; exit 0 when OUTDIR is current, 1 when a build is due
#
# Produces in OUTDIR:
#   vmlinuz        the host's Debian kernel (newest /boot/vmlinuz-* that has /lib/modules/<ver>)
#   vmlinux        the same kernel uncompressed (ELF with a PVH entry; QEMU -kernel boots it
#                  directly, ~6 s faster under TCG than vmlinuz, whose XZ it skips)
#   initrd.img     busybox + virtio/9p/overlay/vsock/virtiofs/erofs modules + guest/init
#   rootfs.img     erofs (default) or squashfs root: mmdebstrap'ed Debian with python3 and
#                  runc, the repo's vmcri/ package in /opt/vmcri (and protobuf from $VMCRI_VENV),
#                  the kernel's modules of guest/module-trees.txt for modprobe
#   VERSION        sha256 over the build inputs; an equal VERSION makes a rerun a no-op
#   manifest.json  version, kernel_version, sizes, sha256s, build time, package list
#
# Environment:
#   VMCRI_GUEST_DIR        output dir (overridden by the OUTDIR argument)
#   VMCRI_VENV             virtualenv to take google/protobuf from (default .venv)
#   VMCRI_ROOTFS_FORMAT    erofs (default) | squashfs
#   VMCRI_KERNEL_VERSION   force a kernel version (default: newest installed)
#   VMCRI_GUEST_SUITE      Debian suite of the guest (default: the host's codename)
#   VMCRI_GUEST_SOURCES    a sources.list file to use instead of the host's apt sources
#   VMCRI_FORCE=1          same as --force
#
# Needs root (mmdebstrap --mode=root, mknod) and the Debian packages:
#   mmdebstrap busybox-static linux-image-amd64 kmod cpio zstd erofs-utils squashfs-tools
#   util-linux python3
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SCRIPT")/.." && pwd)
GUEST_SRC=$REPO/guest

FORCE=${VMCRI_FORCE:-0}
CHECK_ONLY=0
OUT=
while [ $# -gt 0 ]; do
	case "$1" in
	-f | --force) FORCE=1 ;;
	--check) CHECK_ONLY=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "build-guest-image: unknown option $1" >&2
		exit 2
		;;
	*) OUT=$1 ;;
	esac
	shift
done
OUT=${OUT:-${VMCRI_GUEST_DIR:-$GUEST_SRC/build}}
VENV=${VMCRI_VENV:-$REPO/.venv}
case "$VENV" in /*) ;; *) VENV=$REPO/$VENV ;; esac
FORMAT=${VMCRI_ROOTFS_FORMAT:-erofs}
ARTIFACTS=(vmlinuz initrd.img rootfs.img manifest.json)

log() { echo "build-guest-image: $*" >&2; }
die() {
	echo "build-guest-image: ERROR: $*" >&2
	exit 1
}

case "$FORMAT" in erofs | squashfs) ;; *) die "VMCRI_ROOTFS_FORMAT must be erofs or squashfs, not $FORMAT" ;; esac

# ------------------------------------------------------------------ inputs
pick_kernel() {
	if [ -n "${VMCRI_KERNEL_VERSION:-}" ]; then
		echo "$VMCRI_KERNEL_VERSION"
		return
	fi
	local f v
	for f in /boot/vmlinuz-*; do
		[ -e "$f" ] || continue
		v=${f#/boot/vmlinuz-}
		[ -d "/lib/modules/$v" ] && echo "$v"
	done | sort -V | tail -n 1
}

KVER=$(pick_kernel)
[ -n "$KVER" ] || die "no kernel: need /boot/vmlinuz-<ver> with /lib/modules/<ver> (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || die "$KERNEL missing or unreadable"
[ -d "/lib/modules/$KVER" ] || die "/lib/modules/$KVER missing"

if [ -z "${VMCRI_GUEST_SUITE:-}" ]; then
	# shellcheck disable=SC1091
	SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$SUITE" ] || die "cannot tell the host's Debian codename; set VMCRI_GUEST_SUITE"
else
	SUITE=$VMCRI_GUEST_SUITE
fi

BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || die "busybox not found (apt-get install busybox-static)"
BUSYBOX=$(readlink -f "$BUSYBOX")
if ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is dynamically linked; the initramfs needs busybox-static (apt-get install busybox-static)"
fi

# The host's apt sources for $SUITE (deb822 *.sources and one-line *.list),
# as one-line entries for mmdebstrap: the guest is built from exactly the
# mirror the host uses, with no other network access.
host_sources() {
	python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
ok = re.compile(r"^%s(-updates|-security|/updates)?$" % re.escape(suite))
out = []
def emit(uri, s, comps, signed_by):
    if not ok.match(s):
        return
    opt = f"[signed-by={signed_by}] " if signed_by and signed_by.startswith("/") else ""
    line = f"deb {opt}{uri} {s} {' '.join(comps) or 'main'}"
    if line not in out:
        out.append(line)
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        opts = dict(kv.split("=", 1) for kv in (m.group(1) or "").strip("[] \t").split() if "=" in kv)
        emit(m.group(2), m.group(3), m.group(4).split(), opts.get("signed-by"))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        text = open(path).read()
    except OSError:
        continue
    for para in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for raw in para.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
                continue
            if ":" in raw:
                key, val = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for s in fields.get("suites", "").split():
                emit(uri, s, fields.get("components", "").split(), fields.get("signed-by", "").split("\n")[0])
print("\n".join(out))
PY
}

if [ -n "${VMCRI_GUEST_SOURCES:-}" ]; then
	SOURCES=$(cat "$VMCRI_GUEST_SOURCES")
else
	SOURCES=$(host_sources)
fi
[ -n "$SOURCES" ] || die "no apt source for suite '$SUITE' in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set VMCRI_GUEST_SOURCES"

mapfile -t PACKAGES < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$GUEST_SRC/packages.txt")
[ "${#PACKAGES[@]}" -gt 0 ] || die "$GUEST_SRC/packages.txt lists no package"

# protobuf from the project's virtualenv (pure-Python package, plus the upb
# extension when the venv's Python minor version is the guest's)
PROTOBUF_DIR=
PROTOBUF_SITE=
for d in "$VENV"/lib/python3*/site-packages; do
	if [ -f "$d/google/protobuf/__init__.py" ]; then
		PROTOBUF_SITE=$d
		PROTOBUF_DIR=$d/google/protobuf
		break
	fi
done

# ------------------------------------------------------------------ version
tool_versions() {
	dpkg-query -W -f '${Package}=${Version}\n' mmdebstrap erofs-utils squashfs-tools 2>/dev/null || true
}

compute_version() {
	{
		echo "vmcri-guest-image v1"
		echo "format=$FORMAT suite=$SUITE kernel=$KVER arch=$(uname -m)"
		echo "packages=${PACKAGES[*]}"
		echo "sources:"
		echo "$SOURCES"
		tool_versions
		sha256sum "$SCRIPT" "$KERNEL" "$BUSYBOX" | awk '{print $1}'
		(cd "$GUEST_SRC" && find . -path ./build -prune -o -type f ! -name '*.md' -print | LC_ALL=C sort | xargs -r sha256sum)
		if [ -d "$REPO/vmcri" ]; then
			(cd "$REPO" && find vmcri -name __pycache__ -prune -o -type f -name '*.py' -print | LC_ALL=C sort | xargs -r sha256sum)
		fi
		if [ -n "$PROTOBUF_DIR" ]; then
			pbdirs=(google/protobuf)
			[ -d "$PROTOBUF_SITE/google/_upb" ] && pbdirs+=(google/_upb)
			(cd "$PROTOBUF_SITE" && find "${pbdirs[@]}" -name __pycache__ -prune \
				-o -type f \( -name '*.py' -o -name '*.so' \) -print | LC_ALL=C sort | xargs -r sha256sum)
		fi
	} | sha256sum | awk '{print $1}'
}

VERSION=$(compute_version)

is_current() {
	local a
	[ -f "$OUT/VERSION" ] || return 1
	[ "$(cat "$OUT/VERSION")" = "$VERSION" ] || return 1
	for a in "${ARTIFACTS[@]}"; do [ -s "$OUT/$a" ] || return 1; done
	return 0
}

if [ "$CHECK_ONLY" = 1 ]; then
	if is_current; then
		echo "$VERSION"
		exit 0
	fi
	log "$OUT is not current (want $VERSION)"
	exit 1
fi
if [ "$FORCE" != 1 ] && is_current; then
	log "up to date: $OUT (version ${VERSION:0:12}, kernel $KVER)"
	exit 0
fi

# ------------------------------------------------------------------ build
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, device nodes in the initramfs)"
for t in mmdebstrap modprobe depmod cpio flock sha256sum python3; do
	command -v "$t" >/dev/null || die "$t not found"
done
if [ "$FORMAT" = erofs ]; then
	command -v mkfs.erofs >/dev/null || die "mkfs.erofs not found (apt-get install erofs-utils)"
else
	command -v mksquashfs >/dev/null || die "mksquashfs not found (apt-get install squashfs-tools)"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The lock file is root's alone: a user who could open it could hold its lock and stall
# every build (the daemon's own lock files follow the same rule, vmcri/host/lock_file.py).
umask_was=$(umask)
umask 077
exec 9>"$OUT/.lock"
umask "$umask_was"
chmod 600 "$OUT/.lock"
flock 9
# Another build may have finished while we waited for the lock.
if [ "$FORCE" != 1 ] && is_current; then
	log "up to date: $OUT (version ${VERSION:0:12}, kernel $KVER)"
	exit 0
fi

# Remove a temp dir safely: unmount whatever is left mounted below it (an
# interrupted mmdebstrap leaves /proc, /sys, /dev binds), never cross into
# another file system.
remove_tree() {
	local dir=$1 m
	[ -d "$dir" ] || return 0
	awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	if awk -v d="$dir/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
		log "WARNING: mounts left below $dir, not removing it"
		return 0
	fi
	rm -rf --one-file-system "$dir"
}

for stale in "$OUT"/.build.*; do
	[ -d "$stale" ] && remove_tree "$stale"
done

START=$(date +%s.%N)
TMP=$(mktemp -d "$OUT/.build.XXXXXX")
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() { remove_tree "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
BUILD_LOG=$TMP/build.log
: >"$BUILD_LOG"

log "building guest image ${VERSION:0:12} (kernel $KVER, $FORMAT root, suite $SUITE) in $OUT"

# ---- kernel
cp "$KERNEL" "$TMP/vmlinuz"
# vmlinux: the same kernel uncompressed (an ELF with a PVH entry point, which
# QEMU boots directly with -kernel). Debian compresses vmlinuz with XZ, and
# decompressing it takes ~6 s under TCG: the VM handler should boot vmlinux.
extract_vmlinux() {
	python3 - "$KERNEL" "$1" <<'PY'
import bz2, gzip, lzma, shutil, struct, subprocess, sys, zlib
src, dst = sys.argv[1:]
data = open(src, "rb").read()

def pvh_note(elf):
    # ELF64 little endian: look for a Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY)
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12: off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False

def unxz(b):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)
def ungz(b):
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)
def unbz2(b):
    return bz2.BZ2Decompressor().decompress(b)
def unlzma(b):
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(b)
def cli(*argv):
    def f(b):
        if not shutil.which(argv[0]):
            raise OSError(f"{argv[0]} missing")
        return subprocess.run(argv, input=b, capture_output=True).stdout
    return f

methods = [
    (b"\xfd7zXZ\x00", unxz), (b"\x1f\x8b\x08", ungz), (b"\x28\xb5\x2f\xfd", cli("zstd", "-qdc")),
    (b"\x02\x21\x4c\x18", cli("lz4", "-qdc")), (b"BZh", unbz2), (b"\x5d\x00\x00", unlzma),
]
for magic, fn in methods:
    pos = data.find(magic)
    while pos >= 0:
        try:
            out = fn(data[pos:])
        except Exception:
            out = b""
        if out[:4] == b"\x7fELF":
            if not pvh_note(out):
                sys.exit("kernel has no PVH entry point (CONFIG_PVH): cannot boot it uncompressed")
            open(dst, "wb").write(out)
            sys.exit(0)
        pos = data.find(magic, pos + 1)
sys.exit("no compressed ELF kernel found in " + src)
PY
}
if ! extract_vmlinux "$TMP/vmlinux" 2>>"$BUILD_LOG"; then
	log "WARNING: could not extract a PVH-bootable vmlinux ($(tail -n 1 "$BUILD_LOG")); only vmlinuz"
	rm -f "$TMP/vmlinux"
fi

# ---- initramfs
IR=$TMP/initrd
MODDIR=/lib/modules/$KVER
mkdir -p "$IR"/{bin,dev,proc,sys,run,newroot,etc/vmcri/modules.d,"lib/modules/$KVER"}
cp "$BUSYBOX" "$IR/bin/busybox"
for app in $("$BUSYBOX" --list); do
	[ "$app" = busybox ] || ln -s busybox "$IR/bin/$app"
done
mknod -m 600 "$IR/dev/console" c 5 1
mknod -m 666 "$IR/dev/null" c 1 3
install -m 0755 "$GUEST_SRC/init" "$IR/init"
echo "$VERSION" >"$IR/etc/vmcri/version"
echo "$KVER" >"$IR/etc/vmcri/kernel"

# Resolve a module and its dependencies (soft ones included) into load order:
# module paths relative to $MODDIR, one a line. Host /etc/modprobe.d is ignored.
resolve_module() {
	local out
	out=$(modprobe -C /dev/null --show-depends -S "$KVER" "$1" 2>&1) || return 1
	awk '$1 == "insmod" {print $2}' <<<"$out" | sed "s,^$MODDIR/,,"
}

# Copy a module into the initramfs uncompressed (busybox insmod takes plain .ko).
install_module() {
	local rel=$1 dst
	dst=$IR$MODDIR/${rel%.*}
	case "$rel" in
	*.ko) dst=$IR$MODDIR/$rel ;;
	*.ko.xz | *.ko.gz | *.ko.zst) ;;
	*) die "unexpected module file $rel" ;;
	esac
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	case "$rel" in
	*.ko) cp "$MODDIR/$rel" "$dst" ;;
	*.ko.xz) xz -dc "$MODDIR/$rel" >"$dst" ;;
	*.ko.gz) gzip -dc "$MODDIR/$rel" >"$dst" ;;
	*.ko.zst) zstd -qdc "$MODDIR/$rel" >"$dst" ;;
	esac
}

strip_ext() { sed -E 's/\.(xz|gz|zst)$//'; }

ALWAYS_MODULES=()
VIRTIO_MODULES=()
EXTRA_MODULES=()
mkdir -p "$TMP/modules.virtio" "$IR/etc/vmcri/modules.virtio"
: >"$TMP/modules.always"
while read -r name when _; do
	case "$name" in '' | '#'*) continue ;; esac
	if ! deps=$(resolve_module "$name"); then
		[ "$when" = extra ] || die "kernel $KVER has no module '$name' (guest/modules.txt)"
		log "WARNING: kernel $KVER has no module '$name'; skipped"
		continue
	fi
	[ -n "$deps" ] || echo "module $name is built into $KVER" >>"$BUILD_LOG"
	for rel in $deps; do install_module "$rel"; done
	case "$when" in
	always)
		ALWAYS_MODULES+=("$name")
		strip_ext <<<"$deps" >>"$TMP/modules.always"
		;;
	virtio:[0-9]*)
		id=${when#virtio:}
		case "$id" in *[!0-9]*) die "modules.txt: bad virtio device id in '$name $when'" ;; esac
		VIRTIO_MODULES+=("$name@$id")
		strip_ext <<<"$deps" >>"$TMP/modules.virtio/$id"
		;;
	extra)
		EXTRA_MODULES+=("$name")
		strip_ext <<<"$deps" >"$IR/etc/vmcri/modules.d/$name"
		;;
	*) die "modules.txt: '$name': <when> must be always, virtio:<id> or extra, not '$when'" ;;
	esac
done <"$GUEST_SRC/modules.txt"
# load lists without duplicates, and without what the always list loads anyway
awk 'NF && !seen[$0]++' "$TMP/modules.always" >"$IR/etc/vmcri/modules.always"
for f in "$TMP"/modules.virtio/*; do
	[ -e "$f" ] || continue
	awk 'NR == FNR {have[$0] = 1; next} NF && !have[$0] && !seen[$0]++' \
		"$IR/etc/vmcri/modules.always" "$f" >"$IR/etc/vmcri/modules.virtio/${f##*/}"
done

INITRD_COMPRESS="zstd -q -19 -T0"
command -v zstd >/dev/null || INITRD_COMPRESS="gzip -9n"
(cd "$IR" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
	cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) |
	$INITRD_COMPRESS >"$TMP/initrd.img"
log "initrd: $(stat -c %s "$TMP/initrd.img") bytes, $(find "$IR/lib/modules" -name '*.ko' | wc -l) modules"

# ---- root image
RF=$TMP/rootfs
printf '%s\n' "$SOURCES" >"$TMP/sources.list"
MM_OPTS=(--variant=essential --mode=root --format=directory
	--aptopt='Acquire::Languages "none"'
	--aptopt='APT::Install-Recommends "false"'
	--dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*'
	--dpkgopt='path-exclude=/usr/share/lintian/*'
	--dpkgopt='path-exclude=/usr/share/bash-completion/*'
	--dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-include=/usr/share/doc/*/copyright'
	--include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)")
# merged /usr through symlinks and a dummy usr-is-merged: avoids usrmerge,
# which would pull perl (~45 MB) into the image
if [ -d /usr/share/mmdebstrap/hooks/merged-usr ]; then
	MM_OPTS+=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
fi
# an apt proxy the host uses applies to the guest build as well
while read -r k v; do
	[ -n "$k" ] && MM_OPTS+=(--aptopt="$k \"$v\"")
done < <(apt-config dump 2>/dev/null | sed -n -E 's/^(Acquire::(http|https)::Proxy) "(.+)";$/\1 \3/p')

log "mmdebstrap $SUITE (${PACKAGES[*]})"
if ! mmdebstrap "${MM_OPTS[@]}" "$SUITE" "$RF" "$TMP/sources.list" >>"$BUILD_LOG" 2>&1; then
	tail -n 40 "$BUILD_LOG" >&2
	die "mmdebstrap failed (log above)"
fi

PYVER=$(readlink "$RF/usr/bin/python3" | sed 's,.*/,,') # python3.11
[ -x "$RF/usr/bin/$PYVER" ] || die "no python3 in the guest root"

# trim: docs, caches, package manager state, perl, gconv, unused stdlib parts
rm -rf "${RF:?}"/usr/share/{man,info,locale,lintian,bash-completion,bug} \
	"$RF"/usr/lib/*-linux-gnu/gconv "$RF"/usr/lib/*-linux-gnu/perl-base "$RF"/usr/lib/*-linux-gnu/perl \
	"$RF"/usr/share/perl "$RF"/usr/bin/perl "$RF"/usr/bin/perl5.* \
	"$RF"/var/cache/* "$RF"/var/lib/apt "$RF"/var/lib/dpkg/info "$RF"/var/log/* \
	"${RF:?}"/etc/apt "${RF:?}"/boot "${RF:?}"/home/* "${RF:?}"/srv "${RF:?}"/media
find "$RF/usr/share/doc" -mindepth 1 -type f ! -name copyright -delete 2>/dev/null || true
for d in ensurepip idlelib lib2to3 pydoc_data tkinter turtledemo turtle.py; do
	rm -rf "${RF:?}/usr/lib/$PYVER/$d"
done
# no host details in the guest; the agent writes these per pod
echo vmcri >"$RF/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$RF/etc/hosts"
: >"$RF/etc/resolv.conf"
rm -f "$RF/etc/machine-id"

mkdir -p "$RF"/opt/vmcri/{vmcri,guest} "$RF"/run/vmcri "$RF"/mnt/shares "$RF"/var/lib/vmcri "$RF"/etc/vmcri
if [ -d "$REPO/vmcri" ]; then
	(cd "$REPO" && find vmcri -name __pycache__ -prune -o -type f -name '*.py' -print0 |
		xargs -0 -r cp --parents -t "$RF/opt/vmcri")
else
	log "WARNING: no vmcri/ package in $REPO"
fi
install -m 0644 "$GUEST_SRC/selfcheck.py" "$RF/opt/vmcri/guest/selfcheck.py"

PROTOBUF_VERSION=
if [ -n "$PROTOBUF_DIR" ]; then
	(cd "$PROTOBUF_SITE" && find google/protobuf -name __pycache__ -prune -o -type f -name '*.py' -print0 |
		xargs -0 -r cp --parents -t "$RF/opt/vmcri")
	venv_py=$(basename "$(dirname "$PROTOBUF_SITE")") # python3.11
	if [ -d "$PROTOBUF_SITE/google/_upb" ] && [ "$venv_py" = "$PYVER" ]; then
		# same CPython minor version: the upb extension works in the guest too
		(cd "$PROTOBUF_SITE" && find google/_upb -name __pycache__ -prune -o -type f \( -name '*.py' -o -name '*.so' \) -print0 |
			xargs -0 -r cp --parents -t "$RF/opt/vmcri")
	fi
	for di in "$PROTOBUF_SITE"/protobuf-*.dist-info; do
		[ -d "$di" ] || continue
		PROTOBUF_VERSION=$(sed -n 's/^Version: //p' "$di/METADATA")
		mkdir -p "$RF/opt/vmcri/$(basename "$di")"
		cp "$di/METADATA" "$RF/opt/vmcri/$(basename "$di")/"
	done
	log "protobuf ${PROTOBUF_VERSION:-?} from $PROTOBUF_SITE"
else
	log "WARNING: no google/protobuf in $VENV; the guest gets none (pip install protobuf into the venv)"
fi

# Byte-compile everything once, with hashes that are never re-checked: the
# root is read-only, so Python must never try to (re)write a .pyc at run time.
PYDIRS=()
for d in "/usr/lib/$PYVER" /usr/lib/python3 /opt/vmcri; do
	[ -d "$RF$d" ] && PYDIRS+=("$d")
done
if ! chroot "$RF" "/usr/bin/$PYVER" -m compileall -q -f -j 1 --invalidation-mode unchecked-hash \
	"${PYDIRS[@]}" >>"$BUILD_LOG" 2>&1; then
	tail -n 20 "$BUILD_LOG" >&2
	die "compileall failed in the guest root"
fi

# ---- kernel modules for containers (guest/module-trees.txt): the listed trees of the
# kernel's module tree and their dependencies, indexed by depmod, so that the guest kernel
# loads what a container asks for through kmod's modprobe (packages.txt has kmod).
python3 - "$MODDIR" "$RF$MODDIR" "$GUEST_SRC/module-trees.txt" "$TMP/root-modules.json" <<'PY' ||
import json, os, shutil, sys
moddir, dest, listing, out = sys.argv[1:]
include, exclude = [], []
for raw in open(listing):
    words = raw.split("#", 1)[0].split()
    if not words:
        continue
    if len(words) != 2 or words[0] not in ("include", "exclude"):
        sys.exit(f"module-trees.txt: bad line {raw.strip()!r}")
    (include if words[0] == "include" else exclude).append(words[1].strip("/"))
def below(rel, prefixes):
    return any(rel == p or rel.startswith(p + "/") for p in prefixes)
def name_of(path):
    return os.path.basename(path).split(".ko")[0].replace("-", "_")
deps = {}
for line in open(os.path.join(moddir, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod.strip()] = rest.split()
by_name = {name_of(p): p for p in deps}
soft = {}
if os.path.exists(os.path.join(moddir, "modules.softdep")):
    for line in open(os.path.join(moddir, "modules.softdep")):
        words = line.split()
        if len(words) > 2 and words[0] == "softdep":
            soft[words[1]] = [w for w in words[2:] if w not in ("pre:", "post:")]
picked = [p for p in deps if below(p.removeprefix("kernel/"), include)
          and not below(p.removeprefix("kernel/"), exclude)]
for prefix in include:
    if not any(below(p.removeprefix("kernel/"), [prefix]) for p in picked):
        print(f"build-guest-image: WARNING: module-trees.txt: nothing at {prefix}", file=sys.stderr)
seen, todo = set(), list(picked)
while todo:
    path = todo.pop()
    if path in seen or path not in deps:
        continue
    seen.add(path)
    todo += deps[path]
    todo += [by_name[s] for s in soft.get(name_of(path), []) if s in by_name]
size = 0
for path in sorted(seen):
    target = os.path.join(dest, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(moddir, path), target)
    size += os.path.getsize(target)
for index in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
    if os.path.exists(os.path.join(moddir, index)):
        shutil.copy2(os.path.join(moddir, index), os.path.join(dest, index))
json.dump({"count": len(seen), "bytes": size}, open(out, "w"))
PY
	die "collecting the root image's kernel modules failed"
depmod -b "$RF" "$KVER" >>"$BUILD_LOG" 2>&1 || die "depmod for the root image failed"
log "root image: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['count'], 'modules,', d['bytes'], 'bytes')" "$TMP/root-modules.json")"

echo "$VERSION" >"$RF/etc/vmcri/version"
echo "$KVER" >"$RF/etc/vmcri/kernel"
dpkg-query --admindir="$RF/var/lib/dpkg" -W -f '${Package}=${Version}\n' >"$TMP/packages.lst"

log "making the $FORMAT root image"
if [ "$FORMAT" = erofs ]; then
	# lz4hc: 4 KiB compressed clusters, cheap to decompress under TCG
	mkfs.erofs -zlz4hc,12 --quiet "$TMP/rootfs.img" "$RF" >>"$BUILD_LOG" 2>&1 || die "mkfs.erofs failed"
else
	mksquashfs "$RF" "$TMP/rootfs.img" -comp zstd -Xcompression-level 15 -noappend -quiet -no-progress \
		>>"$BUILD_LOG" 2>&1 || die "mksquashfs failed"
fi
ROOTFS_UNPACKED=$(du -sb "$RF" | awk '{print $1}')

# ---- manifest
END=$(date +%s.%N)
python3 - "$TMP" "$VERSION" "$KVER" "$FORMAT" "$SUITE" "$START" "$END" "$ROOTFS_UNPACKED" \
	"${PROTOBUF_VERSION}" "${ALWAYS_MODULES[*]}" "${VIRTIO_MODULES[*]}" "${EXTRA_MODULES[*]}" <<'PY'
import datetime, hashlib, json, os, sys
tmp, version, kver, fmt, suite, start, end, unpacked, pb, always, virtio, extra = sys.argv[1:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
arts = [a for a in ("vmlinuz", "vmlinux", "initrd.img", "rootfs.img") if os.path.exists(os.path.join(tmp, a))]
m = {
    "version": version,
    "kernel_version": kver,
    "rootfs_format": fmt,
    "suite": suite,
    "sizes": {a: os.path.getsize(os.path.join(tmp, a)) for a in arts},
    "sha256": {a: sha(os.path.join(tmp, a)) for a in arts},
    "rootfs_unpacked_bytes": int(unpacked),
    "build_seconds": round(float(end) - float(start), 1),
    "built_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "protobuf": pb or None,
    "modules": {
        "always": always.split(),
        "by_virtio_device_id": {m.split("@")[0]: int(m.split("@")[1]) for m in virtio.split()},
        "extra": extra.split(),
    },
    "packages": open(os.path.join(tmp, "packages.lst")).read().split(),
    "root_modules": json.load(open(os.path.join(tmp, "root-modules.json"))),
}
with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(m, f, indent=2)
    f.write("\n")
PY
echo "$VERSION" >"$TMP/VERSION"

# ---- install: every artifact by rename (same file system); VERSION last, so
# a directory without VERSION (or with an old one) is never taken as current
rm -f "$OUT/VERSION"
for a in "${ARTIFACTS[@]}"; do
	mv -f "$TMP/$a" "$OUT/$a"
done
if [ -f "$TMP/vmlinux" ]; then
	mv -f "$TMP/vmlinux" "$OUT/vmlinux"
else
	rm -f "$OUT/vmlinux"
fi
mv -f "$BUILD_LOG" "$OUT/build.log"
mv -f "$TMP/VERSION" "$OUT/VERSION"
log "done in $(python3 -c "print(round($END - $START, 1))")s: $OUT (version ${VERSION:0:12})"
for a in vmlinuz vmlinux initrd.img rootfs.img; do
	[ -f "$OUT/$a" ] && log "  $a $(stat -c %s "$OUT/$a") bytes"
done
exit 0
