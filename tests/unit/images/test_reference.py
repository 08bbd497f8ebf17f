from __future__ import annotations

import pytest

from vmcri.errors import InvalidReference
from vmcri.images.reference import parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "name", "tag", "digest"),
    [
        ("busybox", "docker.io/library/busybox", "latest", None),
        ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
        ("user/app", "docker.io/user/app", "latest", None),
        ("index.docker.io/library/busybox", "docker.io/library/busybox", "latest", None),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause", "3.9", None),
        ("localhost/app", "localhost/app", "latest", None),
        ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c", "v1", None),
        (f"busybox@{D}", "docker.io/library/busybox", None, D),
        (f"quay.io/x/y:tag@{D}", "quay.io/x/y", "tag", D),
    ],
)
def test_normalises(text: str, name: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert ref.fetch_ref == (digest or tag)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "Busybox",
        "busybox:",
        "busybox@sha256:abc",
        "a//b",
        "busybox:-x",
        "busybox@md5:" + "a" * 32,
        "x" * 300,
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_repo_tag_and_digest_strings() -> None:
    ref = parse_reference("busybox")
    assert ref.tagged() == "docker.io/library/busybox:latest"
    assert ref.with_digest(D) == f"docker.io/library/busybox@{D}"
