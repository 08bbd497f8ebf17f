"""signedIdentity matching and policy scope lookup, as containers/image defines them."""

from __future__ import annotations

import pytest

from vmcri.images.reference import parse_reference
from vmcri.images.trust.identity import SignedIdentity, parse_named, remap
from vmcri.images.trust.policy import docker_scopes

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


def test_scopes_most_specific_first_with_host_wildcards_without_port() -> None:
    ref = parse_reference("reg.example.com:5000/team/sub/app:1")
    assert docker_scopes(ref) == [
        "reg.example.com:5000/team/sub/app:1",
        "reg.example.com:5000/team/sub/app",
        "reg.example.com:5000/team/sub",
        "reg.example.com:5000/team",
        "reg.example.com:5000",
        "*.example.com",
        "*.com",
    ]
    by_digest = parse_reference(f"busybox@{D}")
    assert docker_scopes(by_digest)[:3] == [
        f"docker.io/library/busybox@{D}",
        "docker.io/library/busybox",
        "docker.io/library",
    ]


def test_parse_named_keeps_no_tag_apart_from_latest() -> None:
    assert parse_named("reg.io/app").name_only
    assert not parse_named("reg.io/app:latest").name_only
    assert not parse_named(f"reg.io/app@{D}").name_only
    assert not parse_named("localhost:5000/app:1").name_only
    assert parse_named("localhost:5000/app").name_only


@pytest.mark.parametrize(
    ("identity", "image", "claim", "ok"),
    [
        (SignedIdentity("matchExact"), "reg.io/app:1", "reg.io/app:1", True),
        (SignedIdentity("matchExact"), "reg.io/app:1", "reg.io/app:2", False),
        (SignedIdentity("matchExact"), "reg.io/app:latest", "reg.io/app", False),
        (SignedIdentity("matchExact"), f"reg.io/app@{D}", "reg.io/app:1", False),
        (SignedIdentity("matchExact"), "busybox", "docker.io/library/busybox:latest", True),
        (SignedIdentity(), "reg.io/app:1", "reg.io/app:1", True),
        (SignedIdentity(), "reg.io/app:1", "reg.io/other:1", False),
        (SignedIdentity(), "reg.io/app:1", "reg.io/app:2", False),
        (SignedIdentity(), f"reg.io/app@{D}", "reg.io/app:1", True),
        (SignedIdentity(), f"reg.io/app@{D}", "reg.io/other:1", False),
        (SignedIdentity(), "reg.io/app:1", "not a reference", False),
        (SignedIdentity("matchRepository"), "reg.io/app:1", "reg.io/app:9", True),
        (SignedIdentity("matchRepository"), "reg.io/app:1", "evil.io/app:1", False),
        (
            SignedIdentity("exactReference", docker_reference="reg.io/app:1"),
            "mirror.io/x:7",
            "reg.io/app:1",
            True,
        ),
        (
            SignedIdentity("exactReference", docker_reference="reg.io/app:1"),
            "reg.io/app:1",
            "reg.io/app:2",
            False,
        ),
        (
            SignedIdentity("exactRepository", docker_repository="reg.io/app"),
            "mirror.io/x:7",
            "reg.io/app:3",
            True,
        ),
        (
            SignedIdentity("exactRepository", docker_repository="reg.io/app"),
            "mirror.io/x:7",
            "reg.io/appx:3",
            False,
        ),
        (
            SignedIdentity("remapIdentity", prefix="mirror.io/ns", signed_prefix="reg.io/team"),
            "mirror.io/ns/app:1",
            "reg.io/team/app:1",
            True,
        ),
        (
            SignedIdentity("remapIdentity", prefix="mirror.io/ns", signed_prefix="reg.io/team"),
            "mirror.io/ns/app:1",
            "mirror.io/ns/app:1",
            False,
        ),
        (
            SignedIdentity("remapIdentity", prefix="mirror.io/ns", signed_prefix="reg.io/team"),
            "mirror.io/nsx/app:1",  # "ns" is not a component prefix of "nsx": no remap
            "reg.io/team/x/app:1",
            False,
        ),
        (
            SignedIdentity("remapIdentity", prefix="mirror.io/ns", signed_prefix="reg.io/team"),
            "other.io/app:1",
            "other.io/app:1",
            True,
        ),
    ],
)
def test_signed_identity(identity: SignedIdentity, image: str, claim: str, ok: bool) -> None:
    assert identity.matches(parse_reference(image), claim) is ok


def test_remap_replaces_a_component_prefix_only() -> None:
    ref = parse_reference("mirror.io/ns/app:1")
    assert str(remap(ref, "mirror.io/ns", "reg.io/t")) == "reg.io/t/app:1"
    assert remap(ref, "mirror.io/n", "reg.io/t") == ref
