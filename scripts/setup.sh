#!/usr/bin/env bash
# Prepare this machine for vmcri: host packages, the virtualenv, generated code,
# the guest image, and the libvirt daemons. Idempotent: a second run does nothing new.
# --bench also installs scripts/bench-packages.txt (what bench/ needs beyond the tests).
source "$(dirname "$0")/lib.sh"
need_root
cd "$VMCRI_TOP"

lists=(scripts/host-packages.txt)
case "${1:-}" in
    "") ;;
    --bench) lists+=(scripts/bench-packages.txt) ;;
    *) echo "$0: unknown option $1 (only --bench)" >&2; exit 2 ;;
esac
missing=()
while read -r pkg; do
    [ -z "$pkg" ] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "${lists[@]}")
if [ ${#missing[@]} -gt 0 ]; then
    say "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

stamp="$VMCRI_VENV/.vmcri-installed"
if [ ! -x "$VMCRI_VENV/bin/python" ]; then
    say "creating the virtualenv in $VMCRI_VENV"
    python3 -m venv "$VMCRI_VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing Python dependencies"
    "$VMCRI_VENV/bin/pip" install -q --upgrade pip
    "$VMCRI_VENV/bin/pip" install -q -e ".[dev]"
    touch "$stamp"
fi

say "generating gRPC code from proto/"
VMCRI_PYTHON="$VMCRI_VENV/bin/python" scripts/gen-proto.sh

if [ -x scripts/build-guest-image.sh ]; then
    say "building the guest image (skipped when up to date)"
    scripts/build-guest-image.sh
fi

scripts/start-services.sh
