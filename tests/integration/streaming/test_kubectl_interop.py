"""Real kubectl (client-go: moby/spdystream and gorilla/websocket) against vmcri's streaming server.

kubectl talks to a stand-in API server that gets the URL from vmcri over CRI, as kubelet
does, and relays the connection; every byte after the request line is kubectl's own.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.streaming.conftest import StreamEnv
from tests.integration.streaming.fake_apiserver import FakeApiServer
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

HTTPD = (
    "mkdir -p /www && echo kubectl-was-here > /www/index.html"
    " && exec httpd -f -p 127.0.0.1:8081 -h /www"
)


@pytest.fixture(scope="module")
def apiserver(env: StreamEnv) -> Iterator[FakeApiServer]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    sandbox_id, config = env.run_pod("kubectl-pod", "runc")
    container_id = env.run_container(sandbox_id, config, "web", ["sh", "-c", HTTPD])

    def url_for(kind: str, query: dict[str, list[str]]) -> str:
        def flag(name: str) -> bool:
            return query.get(name, ["false"])[0] in ("true", "1")

        if kind == "exec":
            request = pb.ExecRequest(
                container_id=container_id,
                cmd=query.get("command", []),
                tty=flag("tty"),
                stdin=flag("stdin"),
                stdout=flag("stdout"),
                stderr=flag("stderr"),
            )
            return str(env.runtime.Exec(request, timeout=30).url)
        request_pf = pb.PortForwardRequest(pod_sandbox_id=sandbox_id)
        return str(env.runtime.PortForward(request_pf, timeout=30).url)

    server = FakeApiServer(url_for, "web", "web")
    yield server
    server.close()


def _kubectl(apiserver: FakeApiServer, *args: str) -> list[str]:
    return ["kubectl", f"--server=http://127.0.0.1:{apiserver.port}", "-n", "default", *args]


def _env(websockets: bool) -> dict[str, str]:
    env = dict(os.environ, KUBECONFIG="/nonexistent")
    flag = "true" if websockets else "false"
    env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = flag
    env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = flag
    return env


@pytest.mark.parametrize("websockets", [False, True], ids=["spdy", "websocket"])
def test_kubectl_exec_stdin_stdout_and_exit_code(
    apiserver: FakeApiServer, websockets: bool
) -> None:
    argv = _kubectl(apiserver, "exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z; exit 7")
    result = subprocess.run(
        argv, input=b"kubectl says hi\n", capture_output=True, env=_env(websockets), timeout=60
    )
    assert result.stdout == b"KUBECTL SAYS HI\n", result.stderr
    assert result.returncode == 7, result.stderr


@pytest.mark.parametrize("websockets", [False, True], ids=["spdy", "websocket"])
def test_kubectl_port_forward(apiserver: FakeApiServer, websockets: bool) -> None:
    argv = _kubectl(apiserver, "port-forward", "web", ":8081")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(websockets)
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8081", line)
        assert match, (line, os.read(proc.stderr.fileno(), 65536) if proc.stderr else b"")
        local = int(match.group(1))
        body = b""
        deadline = time.monotonic() + 20
        while b"kubectl-was-here" not in body and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                body = b""
                while chunk := sock.recv(65536):
                    body += chunk
        assert b"kubectl-was-here" in body
    finally:
        proc.terminate()
        proc.wait(10)
