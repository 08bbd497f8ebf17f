"""Fetching an image's signatures, every byte and count bounded: they are untrusted input.

Two stores (``registries_d.py`` says which apply to a reference):

* a lookaside store (simple signing): ``<base>/<repository path>@sha256=<hex>/signature-<n>``
  for n = 1, 2, ... until one is missing; a ``file://`` base is read as regular files
  only (a FIFO or device planted there cannot hang or feed the daemon), an ``http(s)://``
  base with the pull's deadline and no redirects;
* registry attachments (sigstore): the OCI manifest tagged ``sha256-<hex>.sig`` in the
  image's repository, on the endpoint that served the image; each layer of type
  ``application/vnd.dev.cosign.simplesigning.v1+json`` is a payload, its annotation
  ``dev.cosignproject.cosign/signature`` the base64 signature over it.

More than ``MAX_SIGNATURES`` signatures refuses the image rather than reading on: a
store that answers forever cannot make a pull read forever.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import stat
import urllib.parse
from dataclasses import dataclass

from vmcri.errors import NotFound, RegistryError, SignatureRefused
from vmcri.images.auth import Deadline
from vmcri.images.manifest import OCI_MANIFEST
from vmcri.images.reference import Reference, is_digest
from vmcri.images.registry_client import RegistryClient

MAX_SIGNATURES = 16  # per image and store
MAX_SIGNATURE_BYTES = 64 << 10  # one simple-signing signature (a real one is ~1 KiB)
MAX_PAYLOAD_BYTES = 64 << 10  # one sigstore payload (a real one is ~300 bytes)
LOOKASIDE_TIMEOUT_S = 10.0
COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


@dataclass(frozen=True)
class AttachedSignature:
    payload: bytes
    signature_b64: str


def lookaside_url(base: str, ref: Reference, manifest_digest: str, index: int) -> str:
    """Where signature ``index`` (from 1) of ``manifest_digest`` lives under ``base``."""
    algo, hexa = manifest_digest.split(":", 1)
    return f"{base.rstrip('/')}/{ref.path}@{algo}={hexa}/signature-{index}"


def lookaside_signatures(
    base: str, ref: Reference, manifest_digest: str, deadline: Deadline
) -> list[bytes]:
    """Every signature of ``manifest_digest`` in the lookaside store at ``base``.

    Raises SignatureRefused for an oversized signature or too many of them,
    RegistryError when an http store fails (anything but 200 or 404).
    """
    found: list[bytes] = []
    for index in range(1, MAX_SIGNATURES + 2):
        url = lookaside_url(base, ref, manifest_digest, index)
        data = _read_url(url, deadline)
        if data is None:
            break
        if index > MAX_SIGNATURES:
            raise SignatureRefused(f"{base}: more than {MAX_SIGNATURES} signatures for the image")
        found.append(data)
    return found


def _too_big(url: str) -> SignatureRefused:
    return SignatureRefused(f"{url}: signature larger than {MAX_SIGNATURE_BYTES} bytes")


def _read_url(url: str, deadline: Deadline) -> bytes | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return _read_file(urllib.parse.unquote(parts.path), url)
    deadline.check(f"signature {url}")
    timeout = deadline.timeout(LOOKASIDE_TIMEOUT_S)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl.create_default_context()
        conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"User-Agent": "vmcri/0.1"})
        resp = conn.getresponse()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RegistryError(f"signature store {url}: HTTP {resp.status} {resp.reason}")
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_SIGNATURE_BYTES:
            raise _too_big(url)
        data = resp.read(MAX_SIGNATURE_BYTES + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise RegistryError(f"signature store {url}: {exc}") from exc
    finally:
        conn.close()
    if len(data) > MAX_SIGNATURE_BYTES:
        raise _too_big(url)
    return data


def _read_file(path: str, url: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureRefused(f"{url}: cannot open: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SignatureRefused(f"{url}: not a regular file")
        data = f.read(MAX_SIGNATURE_BYTES + 1)
    if len(data) > MAX_SIGNATURE_BYTES:
        raise _too_big(url)
    return data


class _Bounded:
    """A blob sink that refuses to grow past ``limit`` bytes."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise SignatureRefused(f"{self.what}: larger than {self.limit} bytes")
        self.chunks.append(bytes(data))

    def reset(self) -> None:
        self.chunks.clear()
        self.size = 0


def attached_signatures(client: RegistryClient, manifest_digest: str) -> list[AttachedSignature]:
    """The sigstore signatures attached to ``manifest_digest`` in its repository.

    Raises SignatureRefused for a malformed or oversized attachment, what the registry
    client raises (but NotFound: no attachment is no signature).
    """
    tag = manifest_digest.replace(":", "-", 1) + ".sig"
    try:
        raw, _ = client.get_manifest(tag, accept=OCI_MANIFEST)
    except NotFound:
        return []
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureRefused(f"{tag}: not a JSON manifest") from exc
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise SignatureRefused(f"{tag}: manifest has no layers list")
    if len(layers) > MAX_SIGNATURES:
        raise SignatureRefused(f"{tag}: {len(layers)} signatures, more than {MAX_SIGNATURES}")
    found: list[AttachedSignature] = []
    for i, layer in enumerate(layers):
        where = f"{tag} layers[{i}]"
        if not isinstance(layer, dict) or layer.get("mediaType") != COSIGN_PAYLOAD_TYPE:
            continue  # not a signature (cosign may attach other things)
        digest, size = layer.get("digest"), layer.get("size")
        annotations = layer.get("annotations")
        signature = (
            annotations.get(COSIGN_SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        )
        if not isinstance(digest, str) or not is_digest(digest):
            raise SignatureRefused(f"{where}: digest is not sha256:<hex>")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise SignatureRefused(f"{where}: size is not a non-negative integer")
        if size > MAX_PAYLOAD_BYTES:
            raise SignatureRefused(f"{where}: payload of {size} bytes, over {MAX_PAYLOAD_BYTES}")
        if not isinstance(signature, str):
            raise SignatureRefused(f"{where}: no {COSIGN_SIGNATURE_ANNOTATION} annotation")
        sink = _Bounded(size, where)  # the registry may not send more than it declared
        client.fetch_blob(digest, sink)
        payload = b"".join(sink.chunks)
        if "sha256:" + hashlib.sha256(payload).hexdigest() != digest:
            raise SignatureRefused(f"{where}: payload does not match its digest")
        found.append(AttachedSignature(payload, signature))
    return found
