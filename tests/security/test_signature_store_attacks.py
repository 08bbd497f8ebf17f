"""A hostile signature store: a lookaside server or registry that lies, floods or stalls.

The store plays the attacker over real loopback sockets (``_Hostile``, one HTTP server
answering both lookaside and registry API paths); the node's policy requires signatures,
and ``ImageTrust.check`` (what PullImage calls before storing anything) must refuse each
image, bounded in bytes, requests and time, naming what it refused.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.signing import (
    COSIGN_PAYLOAD_TYPE,
    COSIGN_SIGNATURE_ANNOTATION,
    GpgHome,
    cosign_payload,
    new_sigstore_key,
    public_pem,
    sigstore_sign,
)
from vmcri.errors import (
    DeadlineExceeded,
    InvalidArgument,
    RegistryError,
    SignatureRefused,
)
from vmcri.images.auth import Deadline
from vmcri.images.reference import parse_reference
from vmcri.images.registries_conf import Endpoint
from vmcri.images.registry_client import RegistryClient, RetryPolicy
from vmcri.images.trust.policy import parse_policy
from vmcri.images.trust.registries_d import SignatureStores, StorageConfig
from vmcri.images.trust.sources import MAX_SIGNATURE_BYTES, MAX_SIGNATURES
from vmcri.images.trust.verifier import ImageTrust

DIGEST = "sha256:" + hashlib.sha256(b"the image the node fetched").hexdigest()
KEY = new_sigstore_key("p256")
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Hostile:
    """A loopback HTTP server; ``routes`` maps a path prefix to a handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.sent = 0  # body bytes the handlers managed to write
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                for prefix, route in owner.routes.items():
                    if self.path.startswith(prefix):
                        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                            route(self)
                        return
                self.send_error(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def stream(self, h: http.server.BaseHTTPRequestHandler, total: int, length: bool) -> None:
        """Answer 200 with ``total`` bytes; no Content-Length unless ``length``."""
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(total))
        h.end_headers()
        chunk = b"\x99" * 65536
        while total > 0:
            h.wfile.write(chunk[: min(total, len(chunk))])
            self.sent += min(total, len(chunk))
            total -= len(chunk)

    def json(self, h: http.server.BaseHTTPRequestHandler, doc: object) -> None:
        body = json.dumps(doc).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def store() -> Iterator[_Hostile]:
    hostile = _Hostile()
    yield hostile
    hostile.close()


def _trust(host: str, lookaside: str | None, attachments: bool) -> ImageTrust:
    pem = base64.b64encode(public_pem(KEY)).decode()
    policy = parse_policy(
        json.dumps(
            {
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {
                        f"{host}/gpg": [
                            {"type": "signedBy", "keyType": "GPGKeys", "keyData": _gpg_key()}
                        ],
                        f"{host}/cosign": [{"type": "sigstoreSigned", "keyData": pem}],
                    }
                },
            }
        ).encode(),
        "policy.json",
        Path("/"),
    )
    stores = SignatureStores(StorageConfig(lookaside, attachments))
    return ImageTrust(policy, stores)


def _client(host: str, repo: str) -> RegistryClient:
    return RegistryClient(
        Endpoint(host, repo, insecure=True, mirror=False),
        retry=RetryPolicy(attempts=1),
        deadline=Deadline.after(10),
    )


@functools.cache
def _gpg_key() -> str:
    """An armored public key of a throw-away GPG key (what the policy trusts)."""
    with tempfile.TemporaryDirectory() as tmp, GpgHome(Path(tmp) / "g") as home:
        return base64.b64encode(home.public_key(home.generate("sec"))).decode()


def _check(store: _Hostile, repo: str, *, lookaside: bool = True, deadline: float = 10) -> None:
    trust = _trust(store.host, f"http://{store.host}/sigs" if lookaside else None, True)
    ref = parse_reference(f"{store.host}/{repo}:1")
    trust.check(ref, DIGEST, _client(store.host, repo), deadline=Deadline.after(deadline))


@pytest.mark.parametrize("length", [True, False])
def test_oversized_lookaside_signature_is_refused_after_a_bounded_read(
    store: _Hostile, length: bool
) -> None:
    store.routes["/sigs/"] = lambda h: store.stream(h, 256 << 20, length)
    with pytest.raises(SignatureRefused, match=f"larger than {MAX_SIGNATURE_BYTES}"):
        _check(store, "gpg/app")
    assert store.sent < 16 << 20  # of 256 MiB offered (socket buffers hold the rest)


def test_endless_lookaside_signature_list_stops_at_the_bound(store: _Hostile) -> None:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        store.stream(h, 100, True)

    store.routes["/sigs/"] = answer
    with pytest.raises(SignatureRefused, match=f"more than {MAX_SIGNATURES} signatures"):
        _check(store, "gpg/app")
    assert len(store.requests) == MAX_SIGNATURES + 1


def test_lookaside_that_never_answers_is_bounded_by_the_pull_deadline(store: _Hostile) -> None:
    release = threading.Event()

    def stall(h: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(30)

    store.routes["/sigs/"] = stall
    started = time.monotonic()
    try:
        with pytest.raises((DeadlineExceeded, RegistryError)):
            _check(store, "gpg/app", deadline=1.5)
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_lookaside_fifo_does_not_hang_the_pull(tmp_path: Path) -> None:
    sig_dir = tmp_path / f"gpg/app@{DIGEST.replace(':', '=')}"
    sig_dir.mkdir(parents=True)
    os.mkfifo(sig_dir / "signature-1")  # opened O_NONBLOCK, refused as not a regular file
    trust = _trust("reg.test", f"file://{tmp_path}", False)
    started = time.monotonic()
    with pytest.raises(SignatureRefused, match="not a regular file"):
        trust.check(parse_reference("reg.test/gpg/app:1"), DIGEST, None)
    assert time.monotonic() - started < 5


def _sig_tag() -> str:
    return f"/v2/cosign/app/manifests/{DIGEST.replace(':', '-')}.sig"


def _layer(payload: bytes, signature: str, size: int | None = None) -> dict[str, object]:
    return {
        "mediaType": COSIGN_PAYLOAD_TYPE,
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "size": len(payload) if size is None else size,
        "annotations": {COSIGN_SIGNATURE_ANNOTATION: signature},
    }


def _manifest(layers: list[dict[str, object]]) -> dict[str, object]:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2}
    config["digest"] = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    return {"schemaVersion": 2, "config": config, "layers": layers}


def test_huge_count_of_attached_signatures_is_refused_before_any_blob(store: _Hostile) -> None:
    payload = cosign_payload(f"{store.host}/cosign/app:1", DIGEST)
    layers = [_layer(payload, sigstore_sign(KEY, payload))] * 1000
    store.routes[_sig_tag()] = lambda h: store.json(h, _manifest(layers))
    with pytest.raises(SignatureRefused, match=f"1000 signatures, more than {MAX_SIGNATURES}"):
        _check(store, "cosign/app", lookaside=False)
    assert not [r for r in store.requests if "/blobs/" in r]


def test_attached_payload_larger_than_declared_is_cut_off(store: _Hostile) -> None:
    payload = cosign_payload(f"{store.host}/cosign/app:1", DIGEST)
    layer = _layer(payload, sigstore_sign(KEY, payload))
    store.routes[_sig_tag()] = lambda h: store.json(h, _manifest([layer]))
    store.routes["/v2/cosign/app/blobs/"] = lambda h: store.stream(h, 256 << 20, False)
    with pytest.raises(SignatureRefused, match=f"larger than {len(payload)} bytes"):
        _check(store, "cosign/app", lookaside=False)
    assert store.sent < 16 << 20


def test_valid_signature_claiming_another_digest_is_refused(store: _Hostile) -> None:
    """The trusted key really signed this payload, but for another image's manifest."""
    other = "sha256:" + hashlib.sha256(b"another image").hexdigest()
    payload = cosign_payload(f"{store.host}/cosign/app:1", other)
    layer = _layer(payload, sigstore_sign(KEY, payload))
    store.routes[_sig_tag()] = lambda h: store.json(h, _manifest([layer]))

    def blob(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    store.routes["/v2/cosign/app/blobs/"] = blob
    with pytest.raises(SignatureRefused, match=f"is for manifest '{other}', not {DIGEST}"):
        _check(store, "cosign/app", lookaside=False)


def test_namespace_cannot_name_a_policy_outside_the_directory(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (tmp_path / "evil.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    trust = _trust("reg.test", None, False)
    trust = ImageTrust(trust.policy, trust.stores, policies)
    for namespace in ("../evil", "..", "a/b", "Evil", "x" * 64, "ns\0"):
        with pytest.raises(InvalidArgument, match=r"sandbox_config\.metadata\.namespace"):
            trust.policy_for(namespace)
