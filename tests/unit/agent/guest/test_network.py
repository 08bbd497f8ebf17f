"""The agent's pod network set-up: checked whole, then `ip` calls on the NIC found by MAC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from vmcri.agent.guest.network import GuestNetwork, check_interfaces
from vmcri.agent.guest.sandbox import HostSettings, Sandbox
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, InvalidArgument

MAC = "0a:58:0a:fa:00:05"


def sysfs(root: Path, links: dict[str, str]) -> Path:
    for name, mac in links.items():
        (root / name).mkdir(parents=True)
        (root / name / "address").write_text(mac + "\n")
    return root


def iface(**changes: object) -> agent_pb2.NetInterface:
    fields: dict[str, object] = {
        "mac": MAC,
        "name": "eth0",
        "mtu": 1450,
        "addresses": ["10.250.1.5/24", "fd00:250::5/64"],
        "routes": [
            agent_pb2.NetRoute(dst="0.0.0.0/0", gateway="10.250.1.1"),
            agent_pb2.NetRoute(dst="10.96.0.0/12"),
            agent_pb2.NetRoute(dst="::/0", gateway="fd00:250::1"),
        ],
    }
    fields.update(changes)
    return agent_pb2.NetInterface(**fields)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> None:
        self.calls.append(list(args))


def test_the_nic_with_the_pod_mac_gets_mtu_addresses_and_routes(tmp_path: Path) -> None:
    run = Recorder()
    net = GuestNetwork(run, sysfs(tmp_path, {"lo": "00:00:00:00:00:00", "eth0": MAC}))
    net.configure([iface()])
    assert run.calls == [
        ["link", "set", "dev", "eth0", "mtu", "1450"],
        ["addr", "replace", "10.250.1.5/24", "dev", "eth0"],
        ["addr", "replace", "fd00:250::5/64", "dev", "eth0", "nodad"],
        ["link", "set", "dev", "eth0", "up"],
        ["-4", "route", "replace", "0.0.0.0/0", "via", "10.250.1.1", "dev", "eth0"],
        ["-4", "route", "replace", "10.96.0.0/12", "dev", "eth0"],
        ["-6", "route", "replace", "::/0", "via", "fd00:250::1", "dev", "eth0"],
    ]


def test_a_nic_the_kernel_named_otherwise_is_renamed_to_the_pod_name(tmp_path: Path) -> None:
    run = Recorder()
    net = GuestNetwork(run, sysfs(tmp_path, {"eth0": "52:54:00:00:00:01", "eth1": MAC.upper()}))
    net.configure([iface(routes=[], addresses=[])])
    assert run.calls[:2] == [
        ["link", "set", "dev", "eth1", "down"],
        ["link", "set", "dev", "eth1", "name", "eth0"],
    ]


def test_no_nic_with_the_mac_is_a_failed_precondition(tmp_path: Path) -> None:
    run = Recorder()
    with pytest.raises(FailedPrecondition, match=MAC):
        GuestNetwork(run, sysfs(tmp_path, {"eth0": "52:54:00:00:00:01"})).configure([iface()])
    assert run.calls == []


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"mac": "0A:58:0A:FA:00:05"}, "mac"),
        ({"mac": "0a:58:0a:fa:00:05; reboot"}, "mac"),
        ({"name": "lo"}, "name"),
        ({"name": "../../etc"}, "name"),
        ({"name": "a" * 16}, "name"),
        ({"name": "-eth0 x"}, "name"),
        ({"mtu": 67}, "mtu"),
        ({"mtu": 70000}, "mtu"),
        ({"addresses": ["10.250.1.5"]}, "addresses"),
        ({"addresses": ["dev lo"]}, "addresses"),
        ({"routes": [agent_pb2.NetRoute(dst="10.0.0.1/8")]}, "routes"),
        ({"routes": [agent_pb2.NetRoute(dst="0.0.0.0/0", gateway="eth0")]}, "routes"),
        ({"addresses": [f"10.0.0.{i}/24" for i in range(17)]}, "more than"),
    ],
)
def test_each_bad_field_is_refused_by_name(bad: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        check_interfaces([iface(**bad)])


def test_repeated_or_too_many_interfaces_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="repeated"):
        check_interfaces([iface(), iface(name="eth1")])
    many = [iface(mac=f"0a:58:00:00:00:{i:02x}", name=f"eth{i}") for i in range(9)]
    with pytest.raises(InvalidArgument, match="more than 8 interfaces"):
        check_interfaces(many)


class NoMounts:
    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        raise AssertionError("no mount was asked for")

    def umount(self, target: str, *, detach: bool = False) -> None:
        raise AssertionError("no mount was asked for")

    def is_mounted(self, target: str) -> bool:
        return False

    def load(self) -> None:
        pass


def test_setup_sandbox_refuses_a_bad_interface_before_writing_anything(tmp_path: Path) -> None:
    run = Recorder()
    settings = HostSettings(
        lambda _: None, tmp_path / "sys", GuestNetwork(run, sysfs(tmp_path / "net", {}))
    )
    sandbox = Sandbox(tmp_path / "state", NoMounts(), settings)
    request = agent_pb2.SetupSandboxRequest(hostname="pod", interfaces=[iface(name="lo")])
    with pytest.raises(InvalidArgument, match=r"interfaces\[0\]\.name"):
        sandbox.setup(request)
    assert not (tmp_path / "state").exists() and run.calls == []


def test_setup_sandbox_configures_the_network(tmp_path: Path) -> None:
    run = Recorder()
    names: list[str] = []
    settings = HostSettings(
        names.append, tmp_path, GuestNetwork(run, sysfs(tmp_path / "net", {"eth0": MAC}))
    )
    Sandbox(tmp_path / "state", NoMounts(), settings).setup(
        agent_pb2.SetupSandboxRequest(hostname="pod", interfaces=[iface()])
    )
    assert names == ["pod"]
    assert ["link", "set", "dev", "eth0", "up"] in run.calls


def test_a_nic_hotplugged_during_set_up_takes_no_router_advertisements(tmp_path: Path) -> None:
    """A NIC registered while the guest-wide loop ran copied ``default`` (1) before it was
    written, and was not there to be listed: its own accept_ra is written once it is found,
    before it goes up."""
    conf = tmp_path / "proc" / "net" / "ipv6" / "conf"
    for scope in ("all", "default"):
        (conf / scope).mkdir(parents=True)
        (conf / scope / "accept_ra").write_text("1")
    net_dir = sysfs(tmp_path / "net", {})
    seen_at_up: list[str] = []

    def run(args: Sequence[str]) -> None:
        if list(args[-2:]) == ["eth0", "up"] or list(args[-2:]) == ["eth1", "up"]:
            seen_at_up.append((conf / args[-2] / "accept_ra").read_text())

    class Hotplug(GuestNetwork):
        def _find(self, mac: str, deadline: float = 0.0) -> str:
            # The NIC shows up only now, with the value the old default gave it.
            for name, nic_mac in (("eth0", MAC), ("eth1", "0a:58:0a:fa:00:06")):
                if nic_mac == mac and not (conf / name).exists():
                    sysfs(net_dir, {name: nic_mac})
                    (conf / name).mkdir()
                    (conf / name / "accept_ra").write_text("1")
            return super()._find(mac, deadline)

    settings = HostSettings(lambda _: None, tmp_path / "proc", Hotplug(run, net_dir))
    request = agent_pb2.SetupSandboxRequest(
        interfaces=[
            iface(),
            iface(name="eth1", mac="0a:58:0a:fa:00:06", addresses=[], routes=[]),
        ],
    )
    Sandbox(tmp_path / "state", NoMounts(), settings).setup(request)
    assert (conf / "default" / "accept_ra").read_text() == "0"
    assert seen_at_up == ["0", "0"]
