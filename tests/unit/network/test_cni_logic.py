"""Pure logic of the network layer: config lists, results, capability args, the CNI verbs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cni import BRIDGE, FakeRunner
from vmcri.errors import HostCommandError, InvalidArgument, NotFound, ProtocolError
from vmcri.model import DNSConfig, Metadata, PodConfig, PortMapping, Protocol
from vmcri.network.capabilities import capability_args, parse_quantity
from vmcri.network.cni import Attachment, Cni
from vmcri.network.conflist import NetworkConfigList, load_conf_dir
from vmcri.network.invoke import env_args, plugin_error
from vmcri.network.result import parse_result
from vmcri.oci.pod_files import pod_hostname

PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}


def _conflist(version: str = "1.0.0", plugins: list[dict[str, Any]] | None = None) -> str:
    return json.dumps(
        {"cniVersion": version, "name": "pods", "plugins": [BRIDGE] if plugins is None else plugins}
    )


# ---- config dir ------------------------------------------------------------------------


def test_first_valid_file_in_lexical_order_wins_and_bad_ones_are_named(tmp_path: Path) -> None:
    (tmp_path / "05-broken.conflist").write_text("{")
    (tmp_path / "10-pods.conflist").write_text(_conflist())
    (tmp_path / "20-other.conflist").write_text(_conflist().replace("pods", "other"))
    (tmp_path / "00-ignored.txt").write_text(_conflist())
    state = load_conf_dir(tmp_path)
    assert state.network is not None and state.network.name == "pods"
    (tmp_path / "10-pods.conflist").unlink()
    (tmp_path / "20-other.conflist").unlink()
    state = load_conf_dir(tmp_path)
    assert state.network is None and "05-broken.conflist" in state.reason


def test_single_plugin_conf_becomes_a_list_of_one(tmp_path: Path) -> None:
    (tmp_path / "10-one.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "one", **BRIDGE})
    )
    state = load_conf_dir(tmp_path)
    assert state.network is not None
    assert [p["type"] for p in state.network.plugins] == ["bridge"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is empty"),
        ("[]", "JSON object"),
        (_conflist(version="9.9.9"), "not supported"),
        (_conflist(plugins=[]), "non-empty list"),
        # The type names a binary in the plugin path: a path in it would run anything.
        (_conflist(plugins=[{"type": "../../../bin/sh"}]), "not a plugin name"),
        (_conflist(plugins=[{"type": "/bin/sh"}]), "not a plugin name"),
    ],
)
def test_unusable_configs_are_refused_with_the_reason(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "10-x.conflist").write_text(text)
    state = load_conf_dir(tmp_path)
    assert state.network is None and said in state.reason


def test_missing_dir_is_not_ready(tmp_path: Path) -> None:
    assert "no CNI configuration directory" in load_conf_dir(tmp_path / "nope").reason


# ---- results ----------------------------------------------------------------------------

RESULT_04 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "cni0"}, {"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/x"}],
    "ips": [
        {"version": "6", "address": "fd00::5/64", "interface": 1},
        {"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}


def test_a_0_4_result_gives_ipv4_first_then_ipv6() -> None:
    net = parse_result(json.dumps(RESULT_04), "/run/netns/x")
    assert net.addresses() == ("10.1.0.5", "fd00::5")
    iface = net.pod_interface()
    assert iface is not None and iface.name == "eth0"
    assert net.dns.nameservers == ("10.1.0.1",)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        # Would end up as a line of the pod's /etc/hosts.
        ({"ips": [{"address": "10.1.0.5/24\n1.2.3.4 evil"}]}, "result.ips[0].address"),
        ({"ips": [{"address": "10.1.0.5/24", "interface": 7}]}, "result.ips[0].interface"),
        ({"dns": {"nameservers": ["1.1.1.1 options evil"]}}, "result.dns.nameservers[0]"),
        ({"routes": [{"dst": "nowhere"}]}, "result.routes[0].dst"),
        ({"interfaces": [{"name": "eth0", "mtu": "big"}]}, "result.interfaces[0].mtu"),
        ({"ips": [{"address": "10.0.0.1/8"}] * 1000}, "result.ips"),
    ],
)
def test_hostile_results_are_refused_naming_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_result(json.dumps({**RESULT_04, **patch}), "/x")


# ---- capability args, CNI_ARGS, host names -----------------------------------------------


def _pod(**kw: Any) -> PodConfig:
    return PodConfig(metadata=Metadata(name="web", uid="u1", namespace="ns"), **kw)


def test_capability_args_from_the_pod() -> None:
    pod = _pod(
        port_mappings=(
            PortMapping(Protocol.TCP, 80, 8080),
            PortMapping(Protocol.UDP, 53, 5353, "10.0.0.1"),
            PortMapping(Protocol.TCP, 9000, 0),  # no host side: not mapped
        ),
        annotations={"kubernetes.io/ingress-bandwidth": "10M"},
        dns=DNSConfig(servers=("10.96.0.10",), searches=("svc.local",)),
    )
    caps = capability_args(pod, "10.244.1.0/24,fd00:1::/64")
    assert caps["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"},
    ]
    assert caps["bandwidth"]["ingressRate"] == 10_000_000 and "egressRate" not in caps["bandwidth"]
    assert caps["ipRanges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]]
    assert caps["dns"]["servers"] == ["10.96.0.10"]


def test_bad_bandwidth_annotation_names_it() -> None:
    with pytest.raises(InvalidArgument, match="egress-bandwidth"):
        capability_args(_pod(annotations={"kubernetes.io/egress-bandwidth": "fast"}), "")
    assert parse_quantity("1Gi", "x") == 2**30


def test_cni_args_refuse_separators() -> None:
    assert env_args({"A": "1", "B": "x"}) == "A=1;B=x"
    with pytest.raises(HostCommandError):
        env_args({"K8S_POD_NAME": "a;IgnoreUnknown=0"})


def test_long_host_names_are_cut_like_kubelet_does() -> None:
    assert pod_hostname("short") == "short"
    assert pod_hostname("a" * 62 + "-bc") == "a" * 62
    assert len(pod_hostname("x" * 200).encode()) == 63


def test_plugin_error_object_is_the_message() -> None:
    out = json.dumps({"code": 7, "msg": "no IP", "details": "range full"}).encode()
    assert plugin_error(out, b"", 1) == "no IP: range full (CNI error code 7)"
    assert plugin_error(b"", b"panic: oops\n", 2) == "panic: oops"


# ---- the verbs -------------------------------------------------------------------------


ATT = Attachment("sb1", "/run/netns/sb1", "eth0", "IgnoreUnknown=1", {"portMappings": [1]})


def _net(version: str = "1.0.0") -> NetworkConfigList:
    return NetworkConfigList("pods", version, (BRIDGE, PORTMAP), "/x")


def test_add_chains_prev_results_and_gives_caps_only_to_who_asked() -> None:
    runner = FakeRunner()
    out = Cni(runner).add(_net(), ATT)
    assert json.loads(out)["by"] == "portmap"
    (_, _, bridge), (_, _, portmap) = runner.calls
    assert "prevResult" not in bridge and "runtimeConfig" not in bridge
    assert portmap["prevResult"]["by"] == "bridge"
    assert portmap["runtimeConfig"] == {"portMappings": [1]}
    assert portmap["name"] == "pods" and portmap["cniVersion"] == "1.0.0"


def test_add_looks_every_binary_up_before_running_any() -> None:
    runner = FakeRunner(missing={"portmap"})
    with pytest.raises(NotFound, match="portmap"):
        Cni(runner).add(_net(), ATT)
    assert runner.calls == []


def test_del_runs_in_reverse_past_a_failure_and_raises_the_first() -> None:
    runner = FakeRunner(fail={("DEL", "portmap"): HostCommandError("iptables busy")})
    with pytest.raises(HostCommandError, match="iptables busy"):
        Cni(runner).delete(_net(), ATT, json.dumps({"cniVersion": "1.0.0"}))
    assert [(c, t) for c, t, _ in runner.calls] == [("DEL", "portmap"), ("DEL", "bridge")]
    assert all(conf["prevResult"] == {"cniVersion": "1.0.0"} for _, _, conf in runner.calls)


def test_del_skips_a_missing_binary() -> None:
    runner = FakeRunner(missing={"portmap"})
    Cni(runner).delete(_net(), ATT, "")
    assert [(c, t) for c, t, _ in runner.calls] == [("DEL", "bridge")]


def test_gc_status_only_for_1_1_and_check_not_for_0_3() -> None:
    runner = FakeRunner()
    cni = Cni(runner)
    cni.gc(_net("1.0.0"), [("sb1", "eth0")])
    cni.status(_net("1.0.0"))
    cni.check(_net("0.3.1"), ATT, "{}")
    assert runner.calls == []
    cni.gc(_net("1.1.0"), [("sb1", "eth0")])
    cni.status(_net("1.1.0"))
    commands = [(c, conf.get("cni.dev/valid-attachments")) for c, _, conf in runner.calls]
    assert commands[0] == ("GC", [{"containerID": "sb1", "ifname": "eth0"}])
    assert [c for c, _ in commands] == ["GC", "GC", "STATUS", "STATUS"]
