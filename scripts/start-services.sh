#!/usr/bin/env bash
# Start virtlogd and libvirtd when they are not running (there is no init system here).
source "$(dirname "$0")/lib.sh"
need_root
if ! pgrep -x virtlogd >/dev/null; then
    say "starting virtlogd"
    virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    say "starting libvirtd"
    libvirtd -d
fi
for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
    sleep 0.2
done
echo "libvirtd did not come up: see /var/log/libvirt/" >&2
exit 1
