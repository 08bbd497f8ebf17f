"""The anti-spoofing rules a CNI result gives (vmcri/network/antispoof.py): a pure function."""

from __future__ import annotations

import pytest

from vmcri.network.antispoof import link_local, pod_addresses, removal, ruleset
from vmcri.network.result import parse_result
from vmcri.store.pod_network import IpConfig, NetInterface, PodNetwork

SANDBOX = "ab" * 32
MAC = "0a:58:0a:58:00:05"
LL = "fe80::858:aff:fe58:5"

# What Debian's bridge plugin prints (bridge, host veth, pod eth0), dual stack.
BRIDGE_RESULT = """{
  "cniVersion": "1.0.0",
  "interfaces": [
    {"name": "cni0", "mac": "ee:ee:ee:00:00:01"},
    {"name": "veth1234abcd", "mac": "ee:ee:ee:00:00:02"},
    {"name": "eth0", "mac": "0a:58:0a:58:00:05", "sandbox": "/run/netns/p"}
  ],
  "ips": [
    {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
    {"address": "fd00:0:0:0::5/64", "gateway": "fd00::1", "interface": 2},
    {"address": "10.99.0.9/24", "interface": 0}
  ],
  "routes": [{"dst": "0.0.0.0/0"}]
}"""


def _rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("\t\t")]


def test_link_local_is_the_eui64_of_the_mac() -> None:
    # RFC 4291: flip the universal/local bit, ff:fe in the middle.
    assert link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    assert link_local(MAC) == LL


def test_a_bridge_result_allows_the_pod_interface_addresses_only() -> None:
    network = parse_result(BRIDGE_RESULT, "/run/netns/p")
    pod = pod_addresses(network, MAC)
    # 10.99.0.9 is on the bridge (interface 0), not the pod's.
    assert pod.ipv4 == ("10.88.0.5",)
    assert pod.ipv6 == (LL, "fd00::5")  # normalised: no injected text survives ipaddress
    text = ruleset(SANDBOX, "veth1234abcd", pod)
    assert text.startswith(f"table netdev vmcri-pod-{SANDBOX}\n")
    assert f"delete table netdev vmcri-pod-{SANDBOX}\n" in text
    assert 'type filter hook ingress device "veth1234abcd" priority -100; policy drop;' in text
    assert _rules(text)[1:] == [
        f"ether saddr != {MAC} drop",
        "ether type != { arp, ip, ip6 } drop",
        "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
        f"arp saddr ether {MAC} arp saddr ip {{ 0.0.0.0, 10.88.0.5 }} accept",
        "ip saddr 10.88.0.5 accept",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        "icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } drop",
        "icmpv6 type nd-neighbor-advert @th,64,128 != "
        "{ 0xfe8000000000000008580afffe580005, 0xfd000000000000000000000000000005 } drop",
        f"ip6 saddr {{ {LL}, fd00::5 }} accept",
        "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept",
    ]


def test_a_pod_without_ipv4_sends_no_arp_and_no_ipv4() -> None:
    network = PodNetwork(
        netns_path="/n",
        interfaces=(NetInterface("eth0", MAC, "/n"),),
        ips=(IpConfig("fd00::7/64", interface=0),),
    )
    rules = _rules(ruleset(SANDBOX, "veth0", pod_addresses(network, MAC)))
    assert not [r for r in rules if r.startswith(("arp", "ip saddr"))]  # the policy drops them
    assert f"ip6 saddr {{ {LL}, fd00::7 }} accept" in rules


def test_addresses_without_an_interface_index_are_the_pods() -> None:
    network = PodNetwork(netns_path="/n", ips=(IpConfig("10.1.2.3/24"), IpConfig("10.1.2.4/24")))
    assert pod_addresses(network, MAC.upper()).ipv4 == ("10.1.2.3", "10.1.2.4")
    assert pod_addresses(network, MAC.upper()).mac == MAC


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "0a:58:0a:58:00", "0a:58:0a:58:00:05 drop"])
def test_a_mac_that_is_not_unicast_is_refused(mac: str) -> None:
    with pytest.raises(ValueError, match="not a unicast MAC"):
        pod_addresses(PodNetwork(netns_path="/n"), mac)


@pytest.mark.parametrize("device", ['veth"; flush ruleset', "", "a" * 16, "veth 1"])
def test_a_device_name_that_would_break_the_ruleset_is_refused(device: str) -> None:
    pod = pod_addresses(PodNetwork(netns_path="/n"), MAC)
    with pytest.raises(ValueError, match="bad interface name"):
        ruleset(SANDBOX, device, pod)


def test_removal_deletes_the_table_whether_or_not_it_is_there() -> None:
    table = f"vmcri-pod-{SANDBOX}"
    assert removal(SANDBOX) == f"table netdev {table}\ndelete table netdev {table}\n"
    with pytest.raises(ValueError, match="bad sandbox ID"):
        removal("../x")
