"""A bearer-token server on loopback for docker-registry's ``auth: token``.

It signs JWTs with a throw-away RSA key through the openssl CLI, so the tests
need no JWT library.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
