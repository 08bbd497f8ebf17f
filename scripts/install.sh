#!/usr/bin/env bash
# Install vmcri as a node service, outside this clone:
#
#   PREFIX/venv/                 Python virtualenv with vmcri's runtime dependencies
#   PREFIX/lib/vmcri/            vmcri's code, domain templates and the built guest image
#   PREFIX/bin/vmcri             the command (serve, stop, doctor, config, images)
#   PREFIX/share/doc/vmcri/      the operator docs
#   CONFIG_DIR/config.toml       written from `vmcri config default` when absent; kept otherwise
#   UNIT_DIR/vmcri.service       the systemd unit (packaging/systemd/vmcri.service.in)
#
# Options: --prefix DIR (default /opt/vmcri), --config-dir DIR (default /etc/vmcri),
#          --unit-dir DIR (default /etc/systemd/system).
# Idempotent: a rerun refreshes the code, installs only missing dependencies, copies
# the guest image only when its VERSION changed, and never overwrites the config.
source "$(dirname "$0")/lib.sh"
need_root

prefix=/opt/vmcri
config_dir=/etc/vmcri
unit_dir=/etc/systemd/system
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --config-dir) config_dir=${2:?--config-dir needs a directory}; shift 2 ;;
        --unit-dir) unit_dir=${2:?--unit-dir needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$0: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for dir in "$prefix" "$config_dir" "$unit_dir"; do
    case "$dir" in
        /*) ;;
        *) echo "$0: $dir: must be an absolute path" >&2; exit 2 ;;
    esac
done
cd "$VMCRI_TOP"

# Host packages, generated gRPC code and the guest image are built in the clone first.
scripts/setup.sh

venv=$prefix/venv
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    mkdir -p "$prefix"
    python3 -m venv "$venv"
fi
deps=$(python3 -c 'import tomllib, sys
print("\n".join(sorted(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"])))')
if [ "$(cat "$venv/.vmcri-deps" 2>/dev/null)" != "$deps" ]; then
    say "installing runtime dependencies into $venv"
    mapfile -t dep_list <<<"$deps"
    "$venv/bin/pip" install -q --disable-pip-version-check "${dep_list[@]}"
    printf '%s' "$deps" >"$venv/.vmcri-deps"
fi

say "installing vmcri into $prefix/lib/vmcri"
lib=$prefix/lib/vmcri
stage=$prefix/lib/.vmcri.new
rm -rf "$stage"
mkdir -p "$stage/guest"
cp -a vmcri templates "$stage/"
find "$stage/vmcri" -name __pycache__ -prune -exec rm -rf {} +
guest_src=guest/build
guest_dst=$lib/guest/build
if [ -f "$guest_dst/VERSION" ] && cmp -s "$guest_src/VERSION" "$guest_dst/VERSION"; then
    mv "$guest_dst" "$stage/guest/build"  # unchanged: keep the copy already there
else
    say "copying the guest image (version $(cut -c1-12 "$guest_src/VERSION"))"
    cp -a "$guest_src" "$stage/guest/build"
    rm -f "$stage/guest/build/"*.lock
fi
rm -rf "$lib.old"
[ -d "$lib" ] && mv "$lib" "$lib.old"
mv "$stage" "$lib"
rm -rf "$lib.old"

# The venv finds vmcri through a .pth file; the package's parent directory is vmcri's
# "source tree" (templates/ and guest/build next to it), as in the clone.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$lib" >"$site/vmcri.pth"
mkdir -p "$prefix/bin"
cat >"$prefix/bin/vmcri.new" <<WRAPPER
#!/bin/sh
# Installed by scripts/install.sh. -I: no PYTHONPATH, user site or current directory.
exec "$venv/bin/python" -I -m vmcri "\$@"
WRAPPER
chmod 755 "$prefix/bin/vmcri.new"
mv "$prefix/bin/vmcri.new" "$prefix/bin/vmcri"

mkdir -p "$prefix/share/doc/vmcri"
cp docs/*.md "$prefix/share/doc/vmcri/"
cp examples/runtimeclass.yaml "$prefix/share/doc/vmcri/"

config=$config_dir/config.toml
mkdir -p "$config_dir"
if [ -e "$config" ]; then
    say "keeping $config"
    "$prefix/bin/vmcri" config check "$config"
else
    say "writing $config (the defaults; edit it, then restart vmcri)"
    "$prefix/bin/vmcri" config default >"$config.new"
    mv "$config.new" "$config"
fi

mkdir -p "$unit_dir"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG@|$config|g" \
    packaging/systemd/vmcri.service.in >"$unit_dir/vmcri.service.new"
mv "$unit_dir/vmcri.service.new" "$unit_dir/vmcri.service"
say "installed $unit_dir/vmcri.service"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "start it with: systemctl enable --now vmcri"
else
    say "systemd is not running here: start vmcri with '$prefix/bin/vmcri serve --config $config &'"
fi
say "check this host with: $prefix/bin/vmcri doctor --config $config"
