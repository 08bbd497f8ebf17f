"""A real registry on loopback: Debian's ``docker-registry`` (distribution 2.8).

``LocalRegistry`` runs it on a free 127.0.0.1 port with filesystem storage in a
temporary directory, optionally behind htpasswd basic auth or bearer-token auth
(``token_server.TokenServer``). Several registries may share one storage
directory: push to an open one, pull through an authenticated one::

    with LocalRegistry(tmp_path) as reg:
        digest = push_busybox_image(reg.host, "test/busybox:1", cmd=["sh"])
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.token_server import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def registry_available() -> bool:
    return os.access(REGISTRY_BIN, os.X_OK)


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
