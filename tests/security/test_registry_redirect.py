"""A registry (or a network attacker in front of it) redirecting to steal credentials.

The transport is faked at ``RegistryClient._send`` (one request on the wire):
the tests see exactly which headers each hop would have carried.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections.abc import Callable

import pytest

from vmcri.errors import RegistryError
from vmcri.images.auth import Auth
from vmcri.images.registries_conf import Endpoint
from vmcri.images.registry_client import RegistryClient

SECRET = "s3cret-token"


def _response(
    status: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> http.client.HTTPResponse:
    """A real ``HTTPResponse``, parsed from bytes the test wrote to a socket pair."""
    head = "".join(
        f"{k}: {v}\r\n" for k, v in {**(headers or {}), "Content-Length": str(len(body))}.items()
    )
    ours, theirs = socket.socketpair()
    with ours:
        ours.sendall(f"HTTP/1.1 {status} fake\r\n{head}\r\n".encode() + body)
    response = http.client.HTTPResponse(theirs)
    theirs.close()  # the response holds its own file object on the socket
    response.begin()
    return response


class _Conn(http.client.HTTPConnection):
    """Never connects: the answer is already in hand."""

    def __init__(self) -> None:
        super().__init__("registry.test")

    def close(self) -> None:
        pass


Answer = Callable[[str, dict[str, str]], http.client.HTTPResponse]


class _Client(RegistryClient):
    """Answers each request with ``answer(url, headers)`` and records what it sent."""

    def __init__(self, answer: Answer, auth: Auth) -> None:
        super().__init__(Endpoint("registry.test", "lib/img", insecure=False, mirror=False), auth)
        self._answer = answer
        self.sent: list[tuple[str, str]] = []  # (url, Authorization header or "")

    def _send(
        self, scheme: str, parts: urllib.parse.SplitResult, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = f"{scheme}://{parts.netloc}{parts.path}"
        self.sent.append((url, headers.get("Authorization", "")))
        return _Conn(), self._answer(url, headers)


MANIFEST = "https://registry.test/v2/lib/img/manifests/x"
PLAIN = "http://registry.test/v2/lib/img/manifests/x"


def _redirect(to: str, status: int = 307) -> http.client.HTTPResponse:
    return _response(status, {"Location": to})


def test_redirect_down_to_http_on_the_same_host_drops_the_token() -> None:
    def answer(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        return _redirect(PLAIN) if url == MANIFEST else _response(200, body=b"{}")

    client = _Client(answer, Auth(registry_token=SECRET))
    assert client.get_manifest("x")[0] == b"{}"
    assert client.sent == [(MANIFEST, f"Bearer {SECRET}"), (PLAIN, "")]


def test_basic_credentials_are_not_replayed_over_http() -> None:
    def answer(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        if url == PLAIN:
            return _response(200, body=b"{}")
        if "Authorization" not in headers:
            return _response(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return _redirect(PLAIN, 302)

    client = _Client(answer, Auth(username="alice", password="hunter2"))
    assert client.get_manifest("x")[0] == b"{}"
    assert [url for url, _ in client.sent] == [MANIFEST, MANIFEST, PLAIN]
    assert client.sent[1][1].startswith("Basic ")
    assert client.sent[2] == (PLAIN, "")


def test_credentials_stay_dropped_after_a_detour_through_another_host() -> None:
    cdn = "https://cdn.test/signed"
    hops = iter(
        [
            _redirect(cdn + "?x=1", 302),
            _redirect(MANIFEST + "?back", 302),
            _response(200, body=b"{}"),
        ]
    )
    client = _Client(lambda url, headers: next(hops), Auth(registry_token=SECRET))
    assert client.get_manifest("x")[0] == b"{}"
    assert client.sent == [(MANIFEST, f"Bearer {SECRET}"), (cdn, ""), (MANIFEST, "")]


def test_same_host_https_redirect_keeps_the_token() -> None:
    moved = "https://registry.test/v2/lib/img/manifests/y"

    def answer(url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        return _redirect(moved) if url == MANIFEST else _response(200, body=b"{}")

    client = _Client(answer, Auth(registry_token=SECRET))
    client.get_manifest("x")
    assert client.sent == [(MANIFEST, f"Bearer {SECRET}"), (moved, f"Bearer {SECRET}")]


@pytest.mark.parametrize("location", ["file:///etc/shadow", "gopher://registry.test/x"])
def test_redirect_to_a_non_http_scheme_is_refused(location: str) -> None:
    client = _Client(lambda url, headers: _redirect(location), Auth(registry_token=SECRET))
    with pytest.raises(RegistryError, match="not an http"):
        client.get_manifest("x")
    assert len(client.sent) == 1
