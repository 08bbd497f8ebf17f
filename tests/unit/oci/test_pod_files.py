"""A pod's /etc/hosts and /etc/resolv.conf (``vmcri/oci/pod_files.py``)."""

from __future__ import annotations

import pytest

from vmcri.errors import InvalidArgument
from vmcri.model import DNSConfig
from vmcri.oci.pod_files import hosts_file, resolv_conf


def test_pod_files() -> None:
    assert resolv_conf(
        DNSConfig(servers=("10.0.0.10",), searches=("a.svc", "svc"), options=("ndots:5",))
    ) == ("nameserver 10.0.0.10\nsearch a.svc svc\noptions ndots:5\n")
    assert resolv_conf(DNSConfig()) == ""
    with pytest.raises(InvalidArgument, match=r"dns_config.servers\[0\]"):
        resolv_conf(DNSConfig(servers=("1.1.1.1 evil",)))
    assert "127.0.0.1\tlocalhost" in hosts_file("p", ("10.1.1.1",))
    assert hosts_file("p", ("10.1.1.1",)).endswith("10.1.1.1\tp\n")
