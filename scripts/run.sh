#!/usr/bin/env bash
# The main job: set up this machine, start vmcri with its built-in defaults, and
# bring up a VM pod running a container (image from a registry on loopback).
# Idempotent: a running vmcri is reused and the demo pod is replaced.
# --stop stops the daemon this script started; its pods keep running.
source "$(dirname "$0")/lib.sh"
need_root
cd "$VMCRI_TOP"

stop_daemon() {
    # vmcri stop signals the holder of the state-dir lock and waits until it let go.
    exec "$VMCRI_VENV/bin/vmcri" stop
}
if [ "${1:-}" = --stop ]; then
    stop_daemon
fi
scripts/setup.sh

# vmcri's pod network is the first CNI config in /etc/cni/net.d; give a host without
# one the example bridge network (10.88.0.0/16 on bridge vmcri0). An existing one is kept.
cni_dir=/etc/cni/net.d
if ! compgen -G "$cni_dir/*.conflist" >/dev/null && ! compgen -G "$cni_dir/*.conf" >/dev/null \
    && ! compgen -G "$cni_dir/*.json" >/dev/null; then
    say "installing the example CNI network examples/cni/10-vmcri-bridge.conflist into $cni_dir"
    install -D -m 0644 examples/cni/10-vmcri-bridge.conflist "$cni_dir/10-vmcri-bridge.conflist"
fi

socket=/run/vmcri/vmcri.sock
log=/var/log/vmcri.log
# Answering, not merely there: a daemon that died leaves its socket file behind.
answers() {
    "$VMCRI_VENV/bin/python" -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" "$socket" 2>/dev/null
}
if ! answers; then
    say "starting vmcri (socket $socket, log $log)"
    setsid "$VMCRI_VENV/bin/vmcri" serve >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        answers && break
        sleep 0.2
    done
    answers || { echo "vmcri did not start; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi
exec "$VMCRI_VENV/bin/python" scripts/demo.py --socket "$socket" "$@"
