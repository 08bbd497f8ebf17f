"""The VM NIC plan from a CNI result, and the backend's plug/unplug order, with fake taps."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.support.hypervisor import FakeHypervisor
from tests.support.vm_backend import make_backend, sandbox
from vmcri.errors import HypervisorError, InvalidArgument, NotFound
from vmcri.handlers.vm.nic import plan_nic, tap_name
from vmcri.network.tap import LinkInfo, check_name
from vmcri.store.pod_network import IpConfig, NetInterface, PodNetwork, Route

NETNS = "/run/netns/cni-test"
MAC = "0a:58:0a:fa:00:05"


class FakeTaps:
    def __init__(self, live: LinkInfo | None = None, fail_attach: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.live = live or LinkInfo("eth0", "aa:bb:cc:00:00:01", 1500)
        self.fail_attach = fail_attach

    def create(self, tap: str) -> None:
        self.calls.append(("create", tap))

    def attach(self, tap: str, netns_path: str, peer: str, mtu: int) -> None:
        self.calls.append(("attach", tap, netns_path, peer, str(mtu)))
        if self.fail_attach:
            raise NotFound(f"attach tap {tap}: the pod interface {peer} is missing")

    def link(self, netns_path: str, name: str) -> LinkInfo:
        self.calls.append(("link", netns_path, name))
        return self.live

    def remove(self, tap: str, netns_path: str, peer: str) -> None:
        self.calls.append(("remove", tap, netns_path, peer))


def network(mac: str = MAC, mtu: int = 1450, **changes: Any) -> PodNetwork:
    base = PodNetwork(
        netns_path=NETNS,
        interfaces=(
            NetInterface(name="cni0"),
            NetInterface(name="veth1234"),
            NetInterface(name="eth0", mac=mac, sandbox=NETNS, mtu=mtu),
        ),
        ips=(
            IpConfig("10.250.1.5/24", "10.250.1.1", 2),
            IpConfig("fd00:250::5/64", "fd00:250::1", 2),
            IpConfig("192.0.2.9/24", "", 0),  # on the bridge: not the guest's
        ),
        routes=(Route("0.0.0.0/0", "10.250.1.1"), Route("::/0", "fd00:250::1")),
        config='{"cniVersion": "1.0.0", "name": "test", "plugins": []}',
    )
    return dataclasses.replace(base, **changes)


def test_no_network_means_no_nic() -> None:
    assert plan_nic("ab" * 32, None, FakeTaps(), vhost=False) is None


def test_the_plan_takes_mac_mtu_addresses_and_routes_of_the_pod_interface() -> None:
    taps = FakeTaps()
    plan = plan_nic("ab" * 32, network(), taps, vhost=True)
    assert plan is not None
    assert (plan.nic.mac, plan.nic.mtu, plan.nic.vhost) == (MAC, 1450, True)
    assert plan.nic.tap == tap_name("ab" * 32) and len(plan.nic.tap) == 15
    assert (plan.netns_path, plan.peer) == (NETNS, "eth0")
    assert plan.guest.name == "eth0" and plan.guest.mac == MAC and plan.guest.mtu == 1450
    assert plan.guest.addresses == ("10.250.1.5/24", "fd00:250::5/64")
    assert [(r.dst, r.gateway) for r in plan.guest.routes] == [
        ("0.0.0.0/0", "10.250.1.1"),
        ("::/0", "fd00:250::1"),
    ]
    assert taps.calls == []  # the result said everything: the netns was not read


def test_mac_and_mtu_missing_from_the_result_are_read_from_the_interface() -> None:
    taps = FakeTaps(live=LinkInfo("eth0", "AA:BB:CC:00:00:01", 9000))
    plan = plan_nic("ab" * 32, network(mac="", mtu=0), taps, vhost=False)
    assert plan is not None
    assert (plan.nic.mac, plan.nic.mtu) == ("aa:bb:cc:00:00:01", 9000)
    assert taps.calls == [("link", NETNS, "eth0")]


@pytest.mark.parametrize(
    "mac",
    [
        "0a:58:0a:fa:00:05'/><interface type='bridge",  # would break out of the XML attribute
        "01:00:5e:00:00:01",  # multicast: never a station's address
        "0a:58:0a:fa:00",
        "zz:58:0a:fa:00:05",
    ],
)
def test_a_mac_that_is_not_a_unicast_address_is_refused_before_any_xml(mac: str) -> None:
    with pytest.raises(InvalidArgument, match=r"network\.interfaces\[eth0\]\.mac"):
        plan_nic("ab" * 32, network(mac=mac), FakeTaps(), vhost=False)


@pytest.mark.parametrize("mtu", [67, 65536])
def test_an_mtu_out_of_range_is_refused(mtu: int) -> None:
    with pytest.raises(InvalidArgument, match=r"mtu"):
        plan_nic("ab" * 32, network(mtu=mtu), FakeTaps(), vhost=False)


def test_a_result_without_a_pod_side_interface_is_refused() -> None:
    result = network(interfaces=(NetInterface(name="cni0"),), ips=())
    with pytest.raises(InvalidArgument, match="no interface inside the pod namespace"):
        plan_nic("ab" * 32, result, FakeTaps(), vhost=False)


def test_a_bad_address_or_route_is_named() -> None:
    with pytest.raises(InvalidArgument, match=r"network\.ips\[0\]\.address"):
        plan_nic("ab" * 32, network(ips=(IpConfig("10.250.1.500/24", "", 2),)), FakeTaps(), False)
    with pytest.raises(InvalidArgument, match=r"network\.routes\[0\]"):
        plan_nic("ab" * 32, network(routes=(Route("default", ""),)), FakeTaps(), False)


def test_tap_names_fit_the_kernel_limit() -> None:
    check_name(tap_name("f" * 64))
    for bad in ("", "x" * 16, "a/b", ".."):
        with pytest.raises(ValueError):
            check_name(bad)


def test_the_backend_creates_the_tap_before_the_vm_and_removes_it_when_the_start_fails(
    short_tmp: Path,
) -> None:
    hypervisor = FakeHypervisor(fail_start=True)
    taps = FakeTaps()
    backend, _ = make_backend(short_tmp, hypervisor, taps=taps)
    record = sandbox(network=network())
    with pytest.raises(HypervisorError, match="cannot start"):
        backend.run_sandbox(record)
    tap = tap_name(record.id)
    assert taps.calls == [("create", tap), ("remove", tap, NETNS, "eth0")]
    iface = ET.fromstring(hypervisor.started_xml).find("devices/interface")
    assert iface is not None and iface.get("type") == "ethernet"
    assert iface.find("mac").get("address") == MAC  # type: ignore[union-attr]
    target = iface.find("target")
    assert target is not None and target.attrib == {"dev": tap, "managed": "no"}


def test_a_nic_that_cannot_join_the_pod_interface_fails_the_start_cleanly(
    short_tmp: Path,
) -> None:
    hypervisor = FakeHypervisor()
    taps = FakeTaps(fail_attach=True)
    backend, _ = make_backend(short_tmp, hypervisor, taps=taps)
    record = sandbox(network=network())
    with pytest.raises(NotFound, match="eth0 is missing"):
        backend.run_sandbox(record)
    tap = tap_name(record.id)
    assert [c[0] for c in taps.calls] == ["create", "attach", "remove"]
    assert taps.calls[-1] == ("remove", tap, NETNS, "eth0")
    assert hypervisor.destroyed == [f"vmcri-{record.id}"]
    assert not hypervisor.running


def test_a_pod_without_network_gets_no_nic_and_removal_still_clears_a_stray_tap(
    short_tmp: Path,
) -> None:
    hypervisor = FakeHypervisor(fail_start=True)
    taps = FakeTaps()
    backend, _ = make_backend(short_tmp, hypervisor, taps=taps)
    record = sandbox()
    with pytest.raises(HypervisorError, match="cannot start"):
        backend.run_sandbox(record)
    assert "<interface" not in hypervisor.started_xml
    assert taps.calls == [("remove", tap_name(record.id), "", "")]


def test_a_pod_network_cni_never_configured_gets_no_nic() -> None:
    # [network] enabled = false: the pod has its namespace with loopback only.
    assert plan_nic("s" * 64, PodNetwork(netns_path=NETNS), FakeTaps(), False) is None
