"""ipRanges from the pod CIDR kubelet sends with UpdateRuntimeConfig (own daemon: it stays set)."""

from __future__ import annotations

import ipaddress

import grpc
import pytest

from tests.integration.network.conftest import NetEnv
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def _update(env: NetEnv, cidr: str) -> None:
    config = pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=cidr))
    env.runtime.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=config))


def test_pod_cidr_becomes_the_ip_range(env: NetEnv) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _update(env, "not-a-cidr")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr" in str(caught.value.details())

    narrow = f"{env.subnet}.128/25"
    _update(env, narrow)
    env.write_conf(env.conflist(bridge_caps={"ipRanges": True}))
    sandbox = env.run_pod(env.pod_config("ranged"))
    ip = env.pod_status(sandbox).network.ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(narrow)
    env.remove(sandbox)
    assert env.leftovers() == []
