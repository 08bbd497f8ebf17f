"""Reusable test helpers: a real registry on loopback and test images built from busybox.

``LocalRegistry`` runs Debian's ``docker-registry`` (distribution 2.8) on a free
127.0.0.1 port with filesystem storage in a temporary directory, optionally
behind htpasswd basic auth or bearer-token auth (with a tiny token server on
loopback that signs JWTs with a throw-away key via the openssl CLI). Several
registries may share one storage directory: push to an open one, pull through
an authenticated one.

``push_busybox_image`` builds a runnable image (``/bin/busybox`` from
busybox-static with applet symlinks, ``/etc/passwd``, ``/etc/group``) plus any
extra layers, and pushes it with the plain v2 API::

    with LocalRegistry(tmp_path) as reg:
        digest = push_busybox_image(reg.host, "test/busybox:1", cmd=["sh"])
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import zstandard

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
APPLETS = (
    "sh",
    "ls",
    "cat",
    "echo",
    "id",
    "sleep",
    "true",
    "false",
    "mkdir",
    "rm",
    "ps",
    "env",
    "test",
    "wc",
    "head",
    "grep",
    "sed",
    "stat",
    "readlink",
    "touch",
    "ln",
    "hostname",
    "date",
    "kill",
    "uname",
    "whoami",
    "top",
    "ip",
    "nc",
    "wget",
    "tail",
    "cp",
    "mv",
    "chmod",
    "find",
    "sh",
    "printf",
    "md5sum",
    "sha256sum",
    "dd",
    "df",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def registry_available() -> bool:
    return os.access(REGISTRY_BIN, os.X_OK)


# -- the registry ---------------------------------------------------------------


@dataclass
class TokenServer:
    """A bearer-token server for docker-registry's ``auth: token`` on loopback.

    Grants a pull/push token for the requested scope when basic credentials
    match (or always, with ``users=None``); counts the tokens it issued.
    """

    workdir: Path
    users: dict[str, str] | None = None
    service: str = "vmcri-test-registry"
    issuer: str = "vmcri-test-issuer"
    issued: int = 0
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "token.key"
        self.cert = self.workdir / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=vmcri-test-token",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        head, body = (_b64url(json.dumps(x).encode()) for x in (header, claims))
        signing_input = f"{head}.{body}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def start(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if outer.users is not None:
                    header = self.headers.get("Authorization", "")
                    ok = False
                    if header.startswith("Basic "):
                        user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
                        ok = outer.users.get(user) == pw
                    if not ok:
                        self.send_response(401)
                        self.end_headers()
                        return
                access = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                token = outer.sign(
                    {
                        "iss": outer.issuer,
                        "sub": "test",
                        "aud": outer.service,
                        "exp": now + 600,
                        "nbf": now - 10,
                        "iat": now,
                        "jti": os.urandom(8).hex(),
                        "access": access,
                    }
                )
                outer.issued += 1
                body = json.dumps({"token": token, "expires_in": 600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LocalRegistry:
    """docker-registry on 127.0.0.1:<free port>; a context manager.

    ``htpasswd`` ({user: password}) turns on basic auth; ``token`` turns on
    bearer-token auth against that ``TokenServer`` (which it starts and stops).
    """

    def __init__(
        self,
        workdir: Path,
        storage: Path | None = None,
        htpasswd: dict[str, str] | None = None,
        token: TokenServer | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = storage or workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.htpasswd = htpasswd
        self.token = token
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"registry-{self.port}.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.htpasswd is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # the only stdlib bcrypt; tests only

            path = self.workdir / "htpasswd"
            path.write_text(
                "".join(
                    f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
                    for u, p in self.htpasswd.items()
                )
            )
            lines += ["auth:", "  htpasswd:", "    realm: vmcri-test", f"    path: {path}"]
        elif self.token is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {self.token.service}",
                f"    issuer: {self.token.issuer}",
                f"    rootcertbundle: {self.token.cert}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start and wait until ``/v2/`` answers. Raises RuntimeError if it does not."""
        if self.token is not None:
            self.token.start()
        config = self.workdir / f"config-{self.port}.yml"
        config.write_text(self._config())
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(self.host, timeout=1)
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not become ready in 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.token is not None:
            self.token.stop()

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- building layers ---------------------------------------------------------------


@dataclass
class Layer:
    """A layer under construction: add entries, then ``blob()``."""

    compression: str = "gzip"  # "gzip", "zstd" or "none"
    _buf: io.BytesIO = field(default_factory=io.BytesIO)
    _tar: tarfile.TarFile | None = None
    mtime: int = 1_700_000_000

    def __post_init__(self) -> None:
        self._tar = tarfile.open(  # noqa: SIM115 -- closed by tar_bytes()
            fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT
        )

    def _info(
        self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = self.mtime
        return info

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        """Add a raw entry (for malicious layers)."""
        assert self._tar is not None
        if data is not None:
            info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Layer:
        return self.add(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(
        self,
        name: str,
        data: bytes,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        xattrs: dict[str, str] | None = None,
    ) -> Layer:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return self.add(info, data)

    def symlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        return self.add(info)

    def hardlink(self, name: str, target: str) -> Layer:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        return self.add(info)

    def whiteout(self, name: str) -> Layer:
        head, _, base = name.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq", b"")

    def device(self, name: str, major: int = 1, minor: int = 3) -> Layer:
        info = self._info(name, tarfile.CHRTYPE, 0o666)
        info.devmajor, info.devminor = major, minor
        return self.add(info)

    def tar_bytes(self) -> bytes:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        return self._buf.getvalue()

    def blob(self) -> tuple[bytes, str, str]:
        """(compressed blob, media type, diff_id)."""
        raw = self.tar_bytes()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        if self.compression == "gzip":
            media = "application/vnd.oci.image.layer.v1.tar+gzip"
            return gzip.compress(raw, compresslevel=1, mtime=0), media, diff_id
        if self.compression == "zstd":
            return (
                zstandard.ZstdCompressor().compress(raw),
                "application/vnd.oci.image.layer.v1.tar+zstd",
                diff_id,
            )
        return raw, "application/vnd.oci.image.layer.v1.tar", diff_id


def busybox_layer(compression: str = "gzip") -> Layer:
    """A runnable base: busybox, its applets as symlinks, passwd/group, the usual dirs."""
    layer = Layer(compression)
    for d in ("bin", "etc", "root", "home", "proc", "sys", "dev", "var", "usr"):
        layer.dir(d, 0o700 if d == "root" else 0o755)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    for applet in dict.fromkeys(APPLETS):
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n"
        b"app:x:1000:1000:app:/home/app:/bin/sh\n"
        b"nobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n")
    layer.dir("home/app", 0o755, 1000, 1000)
    return layer


# -- pushing ---------------------------------------------------------------------


class Pusher:
    """Uploads blobs and manifests to ``host`` with the v2 API (monolithic uploads)."""

    def __init__(self, host: str, authorization: str | None = None) -> None:
        self.host = host
        self.authorization = authorization

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, timeout=60)
        hdrs = dict(headers or {})
        if self.authorization:
            hdrs["Authorization"] = self.authorization
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp

    def blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self._request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return digest
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        if resp.status != 202:
            raise RuntimeError(f"upload start: HTTP {resp.status}")
        location = resp.getheader("Location") or ""
        parts = urllib.parse.urlsplit(location)
        sep = "&" if parts.query else ""
        target = f"{parts.path}?{parts.query}{sep}digest={digest}"
        resp = self._request(
            "PUT",
            target,
            data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if resp.status != 201:
            raise RuntimeError(f"blob upload {digest}: HTTP {resp.status}")
        return digest

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type}
        )
        if resp.status != 201:
            raise RuntimeError(f"manifest {repo}:{ref}: HTTP {resp.status}")
        return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class PushedImage:
    manifest_digest: str  # what a pull by digest names (the index's, if one was pushed)
    config_digest: str  # the image ID
    diff_ids: list[str]
    layer_digests: list[str]


def push_image(
    host: str,
    name: str,
    layers: list[Layer],
    *,
    config: dict[str, Any] | None = None,
    docker_types: bool = False,
    index: bool = False,
    authorization: str | None = None,
    bad_diff_id: bool = False,
) -> PushedImage:
    """Push an image built from ``layers`` as ``name`` ("repo:tag")."""
    repo, _, tag = name.rpartition(":")
    pusher = Pusher(host, authorization)
    descs, diff_ids = [], []
    for layer in layers:
        blob, media, diff_id = layer.blob()
        if docker_types:
            media = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        digest = pusher.blob(repo, blob)
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
        diff_ids.append(diff_id)
    if bad_diff_id:
        diff_ids[-1] = "sha256:" + "0" * 64
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "vmcri tests"} for _ in layers],
    }
    cfg_raw = json.dumps(cfg, sort_keys=True).encode()
    cfg_digest = pusher.blob(repo, cfg_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker_types else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker_types else OCI_CONFIG,
            "digest": cfg_digest,
            "size": len(cfg_raw),
        },
        "layers": descs,
    }
    raw = json.dumps(manifest).encode()
    mtype = manifest["mediaType"]
    assert isinstance(mtype, str)
    if not index:
        digest = pusher.manifest(repo, tag, raw, mtype)
        return PushedImage(digest, cfg_digest, diff_ids, [str(d["digest"]) for d in descs])
    m_digest = pusher.manifest(repo, "sha256:" + hashlib.sha256(raw).hexdigest(), raw, mtype)
    # A decoy for another platform first, so platform selection is really exercised.
    decoy = {**manifest, "layers": []}
    decoy_raw = json.dumps(decoy).encode()
    decoy_digest = pusher.manifest(
        repo, "sha256:" + hashlib.sha256(decoy_raw).hexdigest(), decoy_raw, mtype
    )
    idx = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": mtype,
                "digest": decoy_digest,
                "size": len(decoy_raw),
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": mtype,
                "digest": m_digest,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    idx_raw = json.dumps(idx).encode()
    digest = pusher.manifest(repo, tag, idx_raw, OCI_INDEX)
    return PushedImage(digest, cfg_digest, diff_ids, [str(d["digest"]) for d in descs])


def push_busybox_image(
    host: str,
    name: str,
    *,
    extra_layers: list[Layer] | None = None,
    user: str | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    compression: str = "gzip",
    index: bool = False,
) -> PushedImage:
    """Push busybox (plus ``extra_layers``) as ``name``; returns what was pushed."""
    config: dict[str, Any] = {
        "Env": env or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd if cmd is not None else ["sh"],
    }
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if user is not None:
        config["User"] = user
    return push_image(
        host, name, [busybox_layer(compression), *(extra_layers or [])], config=config, index=index
    )


def registries_conf_for(path: Path, *hosts: str) -> Path:
    """A registries.conf marking ``hosts`` insecure (plain HTTP on loopback)."""
    path.write_text("".join(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n\n' for h in hosts))
    return path


@contextlib.contextmanager
def registry_or_skip(workdir: Path, **kwargs: Any) -> Iterator[LocalRegistry]:
    import pytest

    if not registry_available() or shutil.which("openssl") is None:
        pytest.skip(f"{REGISTRY_BIN} (Debian package docker-registry) is not installed")
    with LocalRegistry(workdir, **kwargs) as reg:
        yield reg


class ThrottlingProxy:
    """A loopback TCP relay that slows responses to ``rate`` bytes/s (for kill -9 tests)."""

    def __init__(self, target: str, rate: int) -> None:
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target_host, self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.rate), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        chunk = 16384
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop = True
        self._listener.close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
