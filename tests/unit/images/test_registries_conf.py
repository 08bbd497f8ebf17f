from __future__ import annotations

from pathlib import Path

import pytest

from vmcri.errors import ConfigError
from vmcri.images.reference import parse_reference
from vmcri.images.registries_conf import (
    is_loopback,
    load_registries_conf,
    parse_registries_conf,
)

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "registry.k8s.io"
location = "registry.k8s.io"
[[registry.mirror]]
location = "127.0.0.1:5000/k8s"
insecure = true
[[registry.mirror]]
location = "mirror.local/digests"
pull-from-mirror = "digest-only"

[[registry]]
location = "plain.local:5000"
insecure = true

[[registry]]
prefix = "blocked.example"
blocked = true

[[registry]]
prefix = "*.corp.example"
location = "proxy.corp.example"
"""


def test_mirrors_in_order_then_origin() -> None:
    conf = parse_registries_conf(CONF)
    eps = conf.endpoints(parse_reference("registry.k8s.io/pause:3.9"))
    assert [(e.host, e.repository, e.insecure, e.mirror) for e in eps] == [
        ("127.0.0.1:5000", "k8s/pause", True, True),
        ("registry.k8s.io", "pause", False, False),
    ]


def test_digest_only_mirror_used_for_digests() -> None:
    conf = parse_registries_conf(CONF)
    eps = conf.endpoints(parse_reference("registry.k8s.io/pause@sha256:" + "b" * 64))
    assert [e.host for e in eps] == ["127.0.0.1:5000", "mirror.local", "registry.k8s.io"]


def test_insecure_blocked_wildcard_default() -> None:
    conf = parse_registries_conf(CONF)
    (ep,) = conf.endpoints(parse_reference("plain.local:5000/app"))
    assert ep.insecure and ep.host == "plain.local:5000"
    assert conf.endpoints(parse_reference("blocked.example/x")) == []
    (ep,) = conf.endpoints(parse_reference("a.corp.example/team/app"))
    assert (ep.host, ep.repository) == ("proxy.corp.example", "team/app")
    (ep,) = conf.endpoints(parse_reference("busybox"))
    assert (ep.host, ep.repository, ep.insecure) == (
        "registry-1.docker.io",
        "library/busybox",
        False,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[registry]]\nlocation = 'x'\nmirrors = []\n", "mirrors"),
        ("[[registry]]\nlocation = 'x'\ninsecure = 'yes'\n", "insecure"),
        ("bogus = 1\n", "bogus"),
        ("[[registry]]\nlocation='x'\n[[registry.mirror]]\nlocation='m'\nfoo=1\n", "foo"),
        (
            "[[registry]]\nlocation='x'\n[[registry.mirror]]\nlocation='m'\n"
            "pull-from-mirror='never'\n",
            "pull-from-mirror",
        ),
        ("[[registry]]\ninsecure = true\n", "prefix"),
        ("[[registry\n", "TOML"),
    ],
)
def test_strict_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_registries_conf(text)


def test_missing_file_means_no_mirrors(tmp_path: Path) -> None:
    conf = load_registries_conf(tmp_path / "absent.conf")
    assert conf.registries == ()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.example:5000", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_registries_without_an_entry_may_use_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    endpoints = parse_registries_conf("").endpoints(parse_reference(f"{host}/app:1"))
    assert [e.insecure for e in endpoints] == [loopback]
