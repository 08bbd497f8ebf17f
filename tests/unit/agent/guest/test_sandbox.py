"""The guest's pod set-up (SetupSandbox) with a fake mounter: files, sysctls, 9p mounts,
its own PID namespace, and refusals before it does anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.guest_mounter import FakeMounter
from vmcri.agent import convert
from vmcri.agent.guest.sandbox import HostSettings, Sandbox
from vmcri.api import agent_pb2
from vmcri.errors import FailedPrecondition, InvalidArgument


def test_sandbox_setup_writes_files_and_sysctls(tmp_path: Path) -> None:
    names: list[str] = []
    proc_sys = tmp_path / "sys"
    (proc_sys / "net" / "ipv4").mkdir(parents=True)
    for scope in ("all", "default", "eth0"):
        (proc_sys / "net" / "ipv6" / "conf" / scope).mkdir(parents=True)
        (proc_sys / "net" / "ipv6" / "conf" / scope / "accept_ra").write_text("1")
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(names.append, proc_sys))
    request = agent_pb2.SetupSandboxRequest(
        hostname="pod-a",
        hosts=b"127.0.0.1 localhost\n",
        resolv_conf=b"nameserver 10.0.0.10\n",
        sysctls={"net.ipv4.ip_forward": "1", "net.ipv6.conf.eth0.accept_ra": "1"},
    )
    files = sandbox.setup(request)
    sandbox.setup(request)  # repeated set-up is harmless
    assert Path(files.hosts_path).read_bytes() == b"127.0.0.1 localhost\n"
    assert Path(files.hostname_path).read_text() == "pod-a\n"
    assert names == ["pod-a", "pod-a"]
    assert (proc_sys / "net/ipv4/ip_forward").read_text() == "1"
    # No router advertisements: all, default (a NIC hotplugged later) and the NICs there;
    # the pod's own sysctls come after and win.
    conf = proc_sys / "net/ipv6/conf"
    assert {d.name: (d / "accept_ra").read_text() for d in conf.iterdir()} == {
        "all": "0",
        "default": "0",
        "eth0": "1",
    }
    assert mounter.mounts == []  # the share waits for a container's volume (MountShares)


def test_mount_shares_mounts_each_once(tmp_path: Path) -> None:
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(lambda _: None, tmp_path))
    target = str(tmp_path / "shares" / "vol")
    request = agent_pb2.MountSharesRequest(
        mounts=[agent_pb2.Mount9p(tag="vol0", target=target, options=["ro", "msize=262144"])]
    )
    sandbox.mount_shares(request)
    sandbox.mount_shares(request)  # a second container's volume: mounted already
    assert mounter.mounts == [
        ("vol0", target, "9p", 1, "trans=virtio,version=9p2000.L,msize=262144")
    ]


@pytest.mark.parametrize(
    ("mount", "field"),
    [
        (agent_pb2.Mount9p(tag="t", target="/a/../etc"), "target"),
        (agent_pb2.Mount9p(tag="t", target="/a", options=["a,b"]), "option"),
        (agent_pb2.Mount9p(tag="", target="/a"), "tag"),
    ],
)
def test_mount_shares_checks_every_mount_before_mounting_any(
    tmp_path: Path, mount: agent_pb2.Mount9p, field: str
) -> None:
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(lambda _: None, tmp_path))
    good = agent_pb2.Mount9p(tag="ok", target=str(tmp_path / "ok"))
    with pytest.raises(InvalidArgument, match=field):
        sandbox.mount_shares(agent_pb2.MountSharesRequest(mounts=[good, mount]))
    assert not mounter.mounts


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"hostname": "bad name"}, "hostname"),
        ({"sysctls": {"kernel/../x": "1"}}, "sysctl"),
        ({"hosts": b"x" * 70000}, "hosts"),
        ({"entropy": b"x" * 513}, "entropy"),
    ],
)
def test_sandbox_rejects_bad_fields_before_doing_anything(
    tmp_path: Path, request_fields: dict[str, object], field: str
) -> None:
    mounter = FakeMounter()
    sandbox = Sandbox(tmp_path / "state", mounter, HostSettings(lambda _: None, tmp_path))
    with pytest.raises(InvalidArgument, match=field):
        sandbox.setup(agent_pb2.SetupSandboxRequest(**request_fields))  # type: ignore[arg-type]
    assert not (tmp_path / "state").exists() and not mounter.mounts


def test_the_hosts_entropy_is_mixed_in_before_the_clock_and_the_host_name(tmp_path: Path) -> None:
    done: list[str] = []
    settings = HostSettings(
        lambda name: done.append(f"hostname {name}"),
        tmp_path,
        set_clock=lambda ns: done.append(f"clock {ns}"),
        add_entropy=lambda data: done.append(f"entropy {data.hex()}"),
    )
    sandbox = Sandbox(tmp_path / "state", FakeMounter(), settings)
    sandbox.setup(
        agent_pb2.SetupSandboxRequest(hostname="web", wall_clock_ns=5, entropy=b"\x01\x02")
    )
    assert done == ["entropy 0102", "clock 5", "hostname web"]
    done.clear()
    sandbox.setup(agent_pb2.SetupSandboxRequest(hostname="web"))  # none sent: none mixed
    assert done == ["hostname web"]


def test_a_shared_pid_namespace_is_made_by_the_sandbox_set_up_and_named_in_its_answer(
    tmp_path: Path,
) -> None:
    made: list[str] = []

    def pod_pid() -> str:
        made.append("pid")
        return "/run/vmcri/sandbox/pid"

    settings = HostSettings(lambda _: None, tmp_path)
    sandbox = Sandbox(tmp_path / "state", FakeMounter(), settings, pod_pid=pod_pid)
    assert sandbox.setup(agent_pb2.SetupSandboxRequest()).pid_ns_path == ""
    assert made == []
    files = sandbox.setup(agent_pb2.SetupSandboxRequest(share_pid=True))
    assert files.pid_ns_path == "/run/vmcri/sandbox/pid" and made == ["pid"]
    assert convert.sandbox_files(files).pid_ns_path == "/run/vmcri/sandbox/pid"


def test_an_agent_that_cannot_make_a_pid_namespace_refuses_before_doing_anything(
    tmp_path: Path,
) -> None:
    sandbox = Sandbox(tmp_path / "state", FakeMounter(), HostSettings(lambda _: None, tmp_path))
    with pytest.raises(FailedPrecondition, match="share_pid"):
        sandbox.setup(agent_pb2.SetupSandboxRequest(hostname="a", share_pid=True))
    assert not (tmp_path / "state").exists()
