"""VM pods on the node's CNI network, next to runc pods: one pod IP, reachable both ways.

The VM's NIC is joined to the pod's CNI veth (a tap in the pod netns, tc redirects), so
the address CNI gave the pod is the address its containers have inside the VM.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from tests.integration.network.conftest import HTTP_PORT, NetEnv
from tests.integration.network.test_cni_pods import _answers, _http_get, _pod_get
from tests.support.ports import free_port
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.handlers.vm.nic import tap_name

pytestmark = pytest.mark.integration

VM = "vm"


def _taps() -> str:
    return subprocess.run(
        ["ip", "-o", "link", "show", "type", "tun"], capture_output=True, text=True
    ).stdout


def test_vm_and_runc_pods_reach_each_other_and_the_host(env: NetEnv) -> None:
    port_vm = free_port()
    long_name = "v" * 72  # a VM pod without a host name gets its name, cut to 63 bytes
    cfg_vm = env.pod_config(
        long_name, [pb.PortMapping(container_port=HTTP_PORT, host_port=port_vm)]
    )
    cfg_vm.hostname = ""
    cfg_vm2 = env.pod_config("vm-two")
    cfg_runc = env.pod_config("runc-one")
    vm = env.run_pod(cfg_vm, VM)
    vm2 = env.run_pod(cfg_vm2, VM)
    runc = env.run_pod(cfg_runc)
    web_vm = env.start_server(vm, cfg_vm, "from-vm")
    web_vm2 = env.start_server(vm2, cfg_vm2, "from-vm2")
    web_runc = env.start_server(runc, cfg_runc, "from-runc")

    ip_vm, ip_vm2 = env.pod_status(vm).network.ip, env.pod_status(vm2).network.ip
    ip_runc = env.pod_status(runc).network.ip
    subnet = ipaddress.ip_network(f"{env.subnet}.0/24")
    assert {ipaddress.ip_address(ip) in subnet for ip in (ip_vm, ip_vm2, ip_runc)} == {True}
    # The pod IP is the containers' own address inside the VM.
    addresses = env.exec(web_vm, ["ip", "-o", "-4", "addr", "show"]).stdout.decode()
    assert f" {ip_vm}/24 " in addresses, addresses

    # The host reaches the VM pod at its IP and at its hostPort.
    wait_for(lambda: _answers(ip_vm, HTTP_PORT, "from-vm"), 60, "the VM pod's server")
    wait_for(lambda: _answers(ip_runc, HTTP_PORT, "from-runc"), 20, "the runc pod's server")
    assert _http_get(env.gateway, port_vm) == "from-vm"

    # runc pod <-> VM pod, both directions; VM pod <-> VM pod; a pod reaches a hostPort.
    assert _pod_get(env, web_runc, ip_vm, HTTP_PORT) == "from-vm"
    assert _pod_get(env, web_vm, ip_runc, HTTP_PORT) == "from-runc"
    assert _pod_get(env, web_vm, ip_vm2, HTTP_PORT) == "from-vm2"
    assert _pod_get(env, web_vm2, ip_vm, HTTP_PORT) == "from-vm"
    assert _pod_get(env, web_runc, env.gateway, port_vm) == "from-vm"

    # kubelet-style names: the pod's name cut to 63 bytes, on its IP.
    assert env.exec(web_vm, ["hostname"]).stdout.decode().strip() == "v" * 63
    assert f"{ip_vm}\t{'v' * 63}" in env.exec(web_vm, ["cat", "/etc/hosts"]).stdout.decode()

    for sandbox_id in (vm, vm2, runc):
        env.remove(sandbox_id)
    assert env.leftovers() == []
    taps = _taps()
    assert tap_name(vm) not in taps and tap_name(vm2) not in taps, taps


def test_a_host_network_vm_pod_is_refused_naming_the_field(env: NetEnv) -> None:
    cfg = env.pod_config(
        "vm-host-net", namespaces=pb.NamespaceOption(network=pb.NamespaceMode.NODE)
    )
    with pytest.raises(Exception) as refused:
        env.run_pod(cfg, VM)
    assert "INVALID_ARGUMENT" in str(refused.value)
    assert "namespace_options.network" in str(refused.value) and "runc" in str(refused.value)
    assert env.leftovers() == []


def test_a_restored_vm_pod_serves_at_its_new_address(env: NetEnv, tmp_path: Path) -> None:
    """A VM pod checkpointed, removed, and restored as a new pod: CNI gives the new pod
    an address (and the NIC a MAC) of its own, which the restored guest takes in place
    of the saved ones; the web server it ran before answers there without a restart."""
    cfg = env.pod_config("ckpt-vm")
    vm = env.run_pod(cfg, VM)
    web = env.start_server(vm, cfg, "saved-web")
    old_ip = env.pod_status(vm).network.ip
    wait_for(lambda: _answers(old_ip, HTTP_PORT, "saved-web"), 60, "the pod's server")
    env.runtime.CheckpointPod(
        pb.CheckpointPodRequest(pod_sandbox_id=vm, path=str(tmp_path)), timeout=180
    )
    env.remove(vm)

    new_cfg = env.pod_config("ckpt-vm-restored")
    web_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="web"),
        image=pb.ImageSpec(image=env.image),
        command=["sh", "-c", "exit 1"],  # never run: the saved server runs on
        log_path="web.log",
    )
    restored = env.runtime.RestorePod(
        pb.RestorePodRequest(path=str(tmp_path), config=new_cfg, container_configs=[web_config]),
        timeout=180,
    ).pod_sandbox_id
    env.sandboxes.append(restored)
    new_ip = env.pod_status(restored).network.ip
    assert new_ip and new_ip != old_ip
    wait_for(lambda: _answers(new_ip, HTTP_PORT, "saved-web"), 60, "the restored server")
    addresses = env.exec(web, ["ip", "-o", "-4", "addr", "show"]).stdout.decode()
    assert f" {new_ip}/" in addresses and f" {old_ip}/" not in addresses
    env.remove(restored)
    assert env.leftovers() == []
