"""A privileged container in a VM pod gets the kernel modules it asks for, loaded on demand by
the guest's own kernel (the root image carries the module tree and kmod's modprobe)."""

from __future__ import annotations

import pytest

from tests.integration.conformance.conftest import Pod
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

# bridge, veth, vxlan and dummy are modules of the guest kernel, none loaded at boot; each
# `ip link add` makes the kernel ask modprobe for it.
MAKE = (
    "ip link add br0 type bridge && ip link add va type veth peer name vb"
    " && ip link add vx0 type vxlan id 42 dev lo && ip link add d0 type dummy"
    " && ip -o link show"
)
CLEAN = "ip link del br0; ip link del vx0; ip link del d0; ip link del va || ip link del veth0"


def _loaded(pod: Pod, container_id: str) -> set[str]:
    modules = pod.exec(container_id, ["cat", "/proc/modules"]).stdout.decode()
    return {line.split()[0] for line in modules.splitlines()}


def test_a_privileged_container_makes_a_bridge_veth_and_vxlan(vm_pod: Pod) -> None:
    security = pb.LinuxContainerSecurityContext(privileged=True)
    container_id = vm_pod.run("netadmin", ["sleep", "3600"], security=security)
    wanted = {"bridge", "veth", "vxlan", "dummy"}
    assert not wanted & _loaded(vm_pod, container_id)
    try:
        made = vm_pod.exec(container_id, ["sh", "-c", MAKE])
        assert made.exit_code == 0, made.stderr
        links = made.stdout.decode()
        assert all(f" {name}" in links for name in ("br0:", "vx0:", "d0:", "veth")), links
        assert wanted <= _loaded(vm_pod, container_id)
    finally:
        vm_pod.exec(container_id, ["sh", "-c", CLEAN])
        vm_pod.remove(container_id)
