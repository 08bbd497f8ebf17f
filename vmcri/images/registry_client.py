"""A client of the OCI distribution API (Docker Registry HTTP API v2), pull side only.

Built on the standard library's ``http.client``. urllib3 and httpx were
considered: both would bring connection pools and redirects, but the registry
API needs neither much (a handful of requests per image, blobs streamed once),
while what it does need, the WWW-Authenticate challenge dance, the token
exchange, dropping credentials on redirects to another host or down to plain
HTTP, and per-request timeouts bounded by the pull's deadline, they leave to
the caller anyway. Staying on the standard library keeps the dependency list
short and the read loop under our control (``readinto`` a reused buffer, no per-chunk allocation).

Errors::

    NotFound           the manifest or blob is unknown (404)
    PermissionDenied   credentials refused (401/403 after authenticating)
    RegistryError      anything else: connection failures, 5xx after retries
    DeadlineExceeded   the pull's deadline passed
    ProtocolError      the registry answered nonsense (bad token JSON, oversize manifest)
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vmcri.errors import (
    DeadlineExceeded,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RegistryError,
)
from vmcri.images.auth import NO_AUTH, Auth, Deadline
from vmcri.images.manifest import ACCEPT, MAX_MANIFEST_BYTES
from vmcri.images.registries_conf import Endpoint

log = logging.getLogger(__name__)

USER_AGENT = "vmcri/0.1"
CHUNK = 1 << 20
MAX_REDIRECTS = 5
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


class BlobSink(Protocol):
    """Where a blob's bytes go; ``reset`` starts over after a retried transfer."""

    def write(self, data: bytes | memoryview) -> object: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    first_backoff_s: float = 0.25
    max_backoff_s: float = 4.0


class _Transient(Exception):
    """A failure worth retrying (connection reset, 5xx, 429)."""


class RegistryClient:
    """One repository on one endpoint, with one set of credentials, for one pull.

    Thread-safe: blob downloads of the same pull may run in parallel; the
    bearer token is shared under a lock.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        auth: Auth = NO_AUTH,
        deadline: Deadline | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self._auth = auth
        self._deadline = deadline or Deadline.after(None)
        self._retry = retry
        self._sleep = sleep
        self._lock = threading.Lock()
        self._authorization: str | None = (
            f"Bearer {auth.registry_token}" if auth.registry_token else None
        )
        self._scheme: str | None = None  # "https" or "http" once one worked

    # -- public API ---------------------------------------------------------

    def get_manifest(self, reference: str, accept: str = ACCEPT) -> tuple[bytes, str]:
        """The manifest (or index) bytes and their Content-Type.

        Raises NotFound, PermissionDenied, RegistryError, DeadlineExceeded, ProtocolError.
        """
        path = f"/v2/{self.endpoint.repository}/manifests/{reference}"
        chunks: list[bytes] = []
        total = 0

        class _Collect:
            def write(self, data: bytes | memoryview) -> None:
                nonlocal total
                total += len(data)
                if total > MAX_MANIFEST_BYTES:
                    raise ProtocolError(f"manifest {reference}: larger than {MAX_MANIFEST_BYTES}")
                chunks.append(bytes(data))

            def reset(self) -> None:
                nonlocal total
                chunks.clear()
                total = 0

        ctype = self._get(path, {"Accept": accept}, _Collect(), f"manifest {reference}")
        return b"".join(chunks), ctype

    def fetch_blob(self, digest: str, sink: BlobSink) -> None:
        """Stream blob ``digest`` into ``sink`` (the caller verifies it).

        Raises NotFound, PermissionDenied, RegistryError, DeadlineExceeded.
        """
        path = f"/v2/{self.endpoint.repository}/blobs/{digest}"
        self._get(path, {}, sink, f"blob {digest}")

    # -- request machinery --------------------------------------------------

    def _get(self, path: str, headers: dict[str, str], sink: BlobSink, what: str) -> str:
        """GET with retries on transient failures; returns the Content-Type."""
        delay = self._retry.first_backoff_s
        last: Exception | None = None
        where = f"{what} from {self.endpoint}"
        for attempt in range(self._retry.attempts):
            self._deadline.check(where)
            try:
                return self._get_once(path, headers, sink, where)
            except _Transient as exc:
                last = exc
                sink.reset()
                if attempt + 1 == self._retry.attempts:
                    break
                wait = min(delay, self._retry.max_backoff_s, max(0.0, self._deadline.remaining()))
                log.info("retrying %s in %.2fs: %s", where, wait, exc)
                self._sleep(wait)
                delay *= 2
        raise RegistryError(f"{where}: {last}") from last

    def _get_once(self, path: str, headers: dict[str, str], sink: BlobSink, where: str) -> str:
        url = self._base_url() + path
        authenticated = False
        redirects = 0
        send_auth = True
        while True:
            hdrs = {"User-Agent": USER_AGENT, **headers}
            if send_auth and self._authorization:
                hdrs["Authorization"] = self._authorization
            conn, resp = self._open(url, hdrs, where)
            try:
                status = resp.status
                if status in (301, 302, 303, 307, 308):
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise RegistryError(f"{where}: too many redirects")
                    location = resp.getheader("Location") or ""
                    new_url = urllib.parse.urljoin(url, location)
                    if not _keeps_credentials(url, new_url, where):
                        send_auth = False  # for this hop and every later one
                    url = new_url
                    continue
                if status == 401 and not authenticated and send_auth:
                    challenge = resp.getheader("WWW-Authenticate") or ""
                    resp.read()
                    self._authenticate(challenge, where)
                    authenticated = True
                    continue
                if status in (401, 403):
                    raise PermissionDenied(f"{where}: registry refused access (HTTP {status})")
                if status == 404:
                    raise NotFound(f"{where}: not found (HTTP 404)")
                if status in TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status}")
                if status != 200:
                    raise RegistryError(f"{where}: unexpected HTTP {status} {resp.reason}")
                self._stream(resp, sink, where)
                return resp.getheader("Content-Type") or ""
            finally:
                conn.close()

    def _stream(self, resp: http.client.HTTPResponse, sink: BlobSink, where: str) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                if self._deadline.remaining() <= 0:
                    raise DeadlineExceeded(f"{where}: deadline exceeded")
                n = resp.readinto(buf)
                if not n:
                    break
                sink.write(view[:n])
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"transfer interrupted: {exc}") from exc

    def _base_url(self) -> str:
        scheme = self._scheme or "https"
        return f"{scheme}://{self.endpoint.host}"

    def _open(
        self, url: str, headers: dict[str, str], where: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a GET; for an insecure endpoint fall back from HTTPS to HTTP once."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme
        fallback = (
            self.endpoint.insecure and self._scheme is None and parts.netloc == self.endpoint.host
        )
        try:
            return self._send(scheme, parts, headers)
        except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as exc:
            if isinstance(exc, socket.timeout) and self._deadline.remaining() <= 0:
                raise DeadlineExceeded(f"{where}: deadline exceeded") from exc
            if fallback and scheme == "https":
                log.info("%s: HTTPS failed (%s); insecure registry, trying HTTP", where, exc)
                try:
                    result = self._send("http", parts, headers)
                except (ConnectionError, http.client.HTTPException, OSError) as exc2:
                    raise _Transient(f"cannot reach {parts.netloc}: {exc2}") from exc2
                self._scheme = "http"
                return result
            raise _Transient(f"cannot reach {parts.netloc}: {exc}") from exc

    def _send(
        self, scheme: str, parts: urllib.parse.SplitResult, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        timeout = self._deadline.timeout()
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = _tls_context(verify=not self.endpoint.insecure)
            conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if parts.netloc == self.endpoint.host and self._scheme is None:
            self._scheme = scheme
        return conn, resp

    # -- authentication -----------------------------------------------------

    def _authenticate(self, challenge: str, where: str) -> None:
        """Answer a 401: Basic with the credentials, or fetch a Bearer token.

        Raises PermissionDenied when a challenge needs credentials we lack,
        RegistryError/ProtocolError when the token server fails.
        """
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_PARAM.findall(params_text))
        basic = self._auth.basic()
        if scheme.lower() == "basic":
            if basic is None:
                raise PermissionDenied(f"{where}: registry wants credentials, none were given")
            with self._lock:
                self._authorization = "Basic " + _b64(f"{basic[0]}:{basic[1]}")
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise RegistryError(f"{where}: unsupported authentication challenge {scheme!r}")
        token = self._fetch_token(params, basic, where)
        with self._lock:
            self._authorization = f"Bearer {token}"

    def _fetch_token(
        self, params: dict[str, str], basic: tuple[str, str] | None, where: str
    ) -> str:
        realm = params["realm"]
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or f"repository:{self.endpoint.repository}:pull"
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise ProtocolError(f"{where}: token realm {realm!r} is not an http(s) URL")
        if parts.scheme == "http" and not self.endpoint.insecure:
            raise PermissionDenied(f"{where}: token realm {realm!r} is plain HTTP")
        headers = {"User-Agent": USER_AGENT}
        if self._auth.identity_token:
            method = "POST"
            form = {
                **query,
                "grant_type": "refresh_token",
                "client_id": "vmcri",
                "refresh_token": self._auth.identity_token,
            }
            body: bytes | None = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            target = parts.path or "/"
        else:
            method, body = "GET", None
            sep = "&" if parts.query else ""
            target = (parts.path or "/") + "?" + parts.query + sep + urllib.parse.urlencode(query)
            if basic is not None:
                headers["Authorization"] = "Basic " + _b64(f"{basic[0]}:{basic[1]}")
        timeout = self._deadline.timeout()
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.netloc, timeout=timeout, context=_tls_context(verify=True)
            )
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"{where}: token server {parts.netloc}: {exc}") from exc
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise PermissionDenied(f"{where}: token server refused the credentials")
        if resp.status != 200:
            raise RegistryError(f"{where}: token server answered HTTP {resp.status}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError) as exc:
            raise ProtocolError(f"{where}: token server answer is not JSON") from exc
        if not isinstance(token, str) or not token:
            raise ProtocolError(f"{where}: token server answer has no token")
        return token


def _keeps_credentials(old: str, new: str, where: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` may carry our Authorization header.

    Storage backends get signed URLs, so another host (or port) never sees
    our credentials; nor does a hop from HTTPS down to plain HTTP on the same
    host, where anyone on the path could read them.
    Raises RegistryError for a redirect to anything but http(s).
    """
    a, b = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if b.scheme not in ("http", "https") or not b.netloc:
        raise RegistryError(f"{where}: redirect to {new!r} is not an http(s) URL")
    return a.netloc == b.netloc and not (a.scheme == "https" and b.scheme == "http")


@functools.lru_cache(maxsize=2)
def _tls_context(verify: bool) -> ssl.SSLContext:
    """One shared context per mode: building one loads the CA bundle, a tenth of
    a second that every pull (and every insecure endpoint's HTTPS probe) paid."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
