"""The host's side of agent answers (``vmcri/agent/convert.py``): what a guest sends is
bounded and checked before the host uses it."""

from __future__ import annotations

import pytest

from vmcri.agent import convert
from vmcri.agent.convert import usage_counters
from vmcri.api import agent_pb2
from vmcri.errors import ProtocolError
from vmcri.usage import DeviceIo


@pytest.mark.parametrize("path", ["relative/pid", "/run/../etc/pid", "/run/\0pid", "/" * 5000])
def test_the_host_refuses_a_bad_pid_namespace_path_from_the_agent(path: str) -> None:
    answer = agent_pb2.SetupSandboxResponse(
        hostname_path="/a", hosts_path="/b", resolv_conf_path="/c", pid_ns_path=path
    )
    with pytest.raises(ProtocolError, match="sandbox file path"):
        convert.sandbox_files(answer)


def test_the_host_bounds_the_counters_a_guest_sends() -> None:
    good = agent_pb2.UsageCounters(
        cpu_user_ns=5,
        sockets=2,
        oom_events=1,
        io=[agent_pb2.DeviceIo(device="vda", reads=3, major=253, minor=16)],
    )
    got = usage_counters(good)
    assert (got.cpu_user_ns, got.sockets, got.oom_events) == (5, 2, 1)
    assert got.io == (DeviceIo("vda", reads=3, major=253, minor=16),)
    for bad in (
        agent_pb2.UsageCounters(threads=1 << 63),  # beyond int64: a lie
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="../../etc")]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", major=1 << 12)]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", minor=1 << 20)]),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="d")] * 65),
        agent_pb2.UsageCounters(io=[agent_pb2.DeviceIo(device="vda", writes=1 << 63)]),
    ):
        with pytest.raises(ProtocolError):
            usage_counters(bad)


def test_the_host_bounds_the_writable_file_system_a_guest_reports() -> None:
    good = agent_pb2.WritableFs(
        device="sda", size_bytes=1 << 30, inodes_total=65536, inodes_free=60000
    )
    found = convert.writable_fs(good)
    assert (found.device, found.limit_bytes, found.inodes_free) == ("sda", 1 << 30, 60000)
    assert convert.writable_fs(agent_pb2.WritableFs()).device == ""  # guest memory
    for bad, match in (
        (agent_pb2.WritableFs(device="../../etc/x"), "bad device name"),
        (agent_pb2.WritableFs(inodes_total=1, inodes_free=2), "2 free inodes of 1"),
        (agent_pb2.WritableFs(size_bytes=1 << 63), "size_bytes"),
    ):
        with pytest.raises(ProtocolError, match=match):
            convert.writable_fs(bad)
