"""A RunPodSandbox that CNI fails: the error carries the plugin's message, nothing half-made stays.

Each case builds the bad input itself (a conflist, a plugin binary, a full range,
a taken port) in the suite's own config dir, which the daemon re-reads on every pod.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.network.conftest import HTTP_PORT, NetEnv
from tests.support.ports import free_port
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture
def net(env: NetEnv) -> Iterator[NetEnv]:
    """The suite's env; its good conflist and no stray plugin are back afterwards."""
    yield env
    env.write_conf(env.conflist())
    for plugin in (env.tmp / "bin").iterdir():
        plugin.unlink()


def _fails(env: NetEnv, name: str, ports: list[pb.PortMapping] | None = None) -> grpc.RpcError:
    before = {s.id for s in env.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    with pytest.raises(grpc.RpcError) as caught:
        env.run_pod(env.pod_config(name, ports))
    after = {s.id for s in env.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items}
    assert after == before, "a failed RunPodSandbox left a sandbox behind"
    assert env.leftovers() == []
    return caught.value


def _plugin(env: NetEnv, name: str, add_body: str) -> dict[str, str]:
    """A plugin in the suite's bin dir whose ADD runs ``add_body``; every other verb succeeds."""
    path = env.tmp / "bin" / name
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        f"{add_body}\n"
        "fi\n"
        'if [ "$CNI_COMMAND" = VERSION ]; then echo \'{"cniVersion":"1.0.0",'
        '"supportedVersions":["1.0.0"]}\'; fi\n'
        "exit 0\n"
    )
    path.chmod(0o755)
    return {"type": name}


def test_missing_plugin_binary(net: NetEnv) -> None:
    net.write_conf(net.conflist(extra=[{"type": "vmcri-no-such-plugin"}]))
    err = _fails(net, "missing-plugin")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "vmcri-no-such-plugin" in str(err.details()) and "not found" in str(err.details())


@pytest.mark.parametrize(("text", "said"), [("{ nope", "not valid JSON"), ("", "is empty")])
def test_invalid_or_empty_conflist(net: NetEnv, text: str, said: str) -> None:
    net.write_conf(text)
    err = _fails(net, "bad-conf")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert said in str(err.details()) and "10-test.conflist" in str(err.details())


def test_failing_plugin_rolls_back_bridge_and_ip(net: NetEnv) -> None:
    fail = _plugin(
        net,
        "vmcri-fail",
        'echo \'{"cniVersion":"1.0.0","code":11,"msg":"boom from the test"}\'; exit 1',
    )
    net.write_conf(net.conflist(extra=[fail]))
    err = _fails(net, "failing-plugin")
    assert "boom from the test" in str(err.details()) and "vmcri-fail" in str(err.details())


def test_plugin_past_its_timeout_is_killed(net: NetEnv) -> None:
    hang = _plugin(net, "vmcri-hang", "exec sleep 60")
    net.write_conf(net.conflist(extra=[hang]))
    err = _fails(net, "hanging-plugin")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "vmcri-hang" in str(err.details()) and "3s" in str(err.details())


def test_ip_exhaustion_in_host_local(net: NetEnv) -> None:
    only = f"{net.subnet}.50"
    net.write_conf(net.conflist(rangeStart=only, rangeEnd=only))
    first = net.run_pod(net.pod_config("only-one"))
    try:
        assert net.pod_status(first).network.ip == only
        err = _fails_while_one_runs(net, "no-room")
        assert "no IP addresses available" in str(err.details())
    finally:
        net.remove(first)
    assert net.leftovers() == []


def _fails_while_one_runs(env: NetEnv, name: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        env.run_pod(env.pod_config(name))
    return caught.value


def test_host_port_taken_by_another_pod_or_the_host(net: NetEnv) -> None:
    port = free_port()
    mapping = [pb.PortMapping(container_port=HTTP_PORT, host_port=port)]
    first = net.run_pod(net.pod_config("port-owner", mapping))
    try:
        with pytest.raises(grpc.RpcError) as caught:
            net.run_pod(net.pod_config("port-thief", mapping))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert f"{port}/tcp is used by another pod" in str(caught.value.details())
    finally:
        net.remove(first)
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))  # a port the host holds: the kernel picks a free one
        listener.listen()
        held = listener.getsockname()[1]
        taken = [pb.PortMapping(container_port=HTTP_PORT, host_port=held)]
        err = _fails(net, "host-port-thief", taken)
    assert f"{held}/tcp is in use on the host" in str(err.details())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


def _guard_tables() -> set[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {line.split()[-1] for line in listed.splitlines() if "vmcri-pod-" in line}


def test_a_result_the_spoof_guard_cannot_use_rolls_back_everything(net: NetEnv) -> None:
    # A plugin after bridge that hands on its result with a multicast MAC for eth0: ADD
    # succeeds, the guard refuses to build rules from it, and ADD must be undone.
    path = net.tmp / "bin" / "vmcri-bad-mac"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "conf = json.load(sys.stdin)\n"
        "if os.environ['CNI_COMMAND'] == 'VERSION':\n"
        "    print(json.dumps({'cniVersion': '1.0.0', 'supportedVersions': ['1.0.0']}))\n"
        "elif os.environ['CNI_COMMAND'] == 'ADD':\n"
        "    result = conf['prevResult']\n"
        "    for iface in result['interfaces']:\n"
        "        if iface.get('sandbox'):\n"
        "            iface['mac'] = '01:00:5e:00:00:01'\n"
        "    print(json.dumps(result))\n"
    )
    path.chmod(0o755)
    before = _guard_tables()
    net.write_conf(net.conflist(extra=[{"type": "vmcri-bad-mac"}]))
    err = _fails(net, "bad-mac")
    assert "01:00:5e:00:00:01" in str(err.details()) and "unicast" in str(err.details())
    assert _guard_tables() == before
