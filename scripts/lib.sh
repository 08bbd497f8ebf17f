# Shared helpers for the scripts in this folder (sourced, not run).
set -euo pipefail
VMCRI_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VMCRI_VENV=${VMCRI_VENV:-$VMCRI_TOP/.venv}
export VMCRI_VENV
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$0: run as root (vmcri manages VMs, mounts and namespaces)" >&2
        exit 1
    fi
}
