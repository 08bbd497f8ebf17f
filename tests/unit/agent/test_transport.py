"""Agent transport URLs (unix, vsock, serial) and finding a virtio-serial port by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.agent.transport import find_virtio_port, parse_url
from vmcri.errors import InvalidArgument


def test_parse_urls() -> None:
    assert parse_url("unix:///run/a.sock").path == "/run/a.sock"
    vsock = parse_url("vsock://3:1024")
    assert (vsock.cid, vsock.port) == (3, 1024)
    assert parse_url("vsock://any:1024").cid == 0xFFFFFFFF
    assert parse_url("serial:///dev/vport0p1").path == "/dev/vport0p1"
    assert parse_url("serial://name:vmcri.agent").port_name == "vmcri.agent"
    for bad in ("tcp://1.2.3.4:5", "unix://relative", "vsock://x:y", "serial:///etc/passwd"):
        with pytest.raises(InvalidArgument):
            parse_url(bad)


def test_find_virtio_port_by_name(tmp_path: Path) -> None:
    for port, name in (("vport1p1", "org.qemu.guest_agent.0"), ("vport1p2", "vmcri.agent")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(name + "\n")
    assert find_virtio_port("vmcri.agent", tmp_path) == Path("/dev/vport1p2")
    with pytest.raises(InvalidArgument):
        find_virtio_port("other", tmp_path)
