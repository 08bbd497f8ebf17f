"""Exec, tty exec, attach and port-forward into a VM pod through the real daemon and guest agent.

One VM for the whole module: under software emulation a boot takes 15-40 s here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from tests.integration.streaming.clients import SpdyClient, spdy_exec, ws_exec
from tests.integration.streaming.conftest import StreamEnv
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

SERVE = (
    "mkdir -p /www && echo hello-from-vm > /www/index.html"
    " && httpd -p 127.0.0.1:8080 -h /www"
    " && while true; do echo tick; sleep 1; done"
)


@pytest.fixture(scope="module")
def vm_pod(env: StreamEnv) -> tuple[str, str]:
    sandbox_id, config = env.run_pod("vm-stream", "vm")
    container_id = env.run_container(sandbox_id, config, "web", ["sh", "-c", SERVE])
    return sandbox_id, container_id


def test_vm_exec_stdin_stdout_exit_code_and_websocket(
    env: StreamEnv, vm_pod: tuple[str, str]
) -> None:
    _, cid = vm_pod
    cmd = ["sh", "-c", "cat; echo to-stderr >&2; exit 4"]
    result = spdy_exec(env.exec_url(cid, cmd, stdin=True, stdout=True, stderr=True), stdin=b"vm\n")
    assert (result.stdout, result.stderr) == (b"vm\n", b"to-stderr\n")
    assert result.status["details"] == {"causes": [{"reason": "ExitCode", "message": "4"}]}
    url = env.exec_url(cid, ["sh", "-c", "tr a-z A-Z"], stdin=True, stdout=True, stderr=True)
    result = ws_exec(url, stdin=b"loud\n")
    assert result.stdout == b"LOUD\n", result
    assert result.status["status"] == "Success"


def test_vm_exec_tty_with_resize(env: StreamEnv, vm_pod: tuple[str, str]) -> None:
    _, cid = vm_pod
    # A resize and the input travel on different streams, so nothing orders them: ask
    # for the size until the new one shows (the VM is slow under emulation).
    script = "while read x; do [ $x = q ] && exit 0; stty size; done"
    url = env.exec_url(cid, ["sh", "-c", script], tty=True, stdin=True, stdout=True)
    client = SpdyClient(url)
    error = client.open(streamtype="error")
    sin = client.open(streamtype="stdin")
    sout = client.open(streamtype="stdout")
    resize = client.open(streamtype="resize")
    client.write(resize, json.dumps({"Width": 111, "Height": 33}).encode())
    deadline = time.monotonic() + 60
    output = b""
    while b"33 111" not in output and time.monotonic() < deadline:
        client.write(sin, b"go\r")
        with contextlib.suppress(TimeoutError):
            output = client.wait_data(sout, b"33 111", timeout=2)
    client.write(sin, b"q\r")
    status = json.loads(client.read_all(error, timeout=60))
    client.close()
    assert status["status"] == "Success", (status, output)
    assert b"33 111" in output


def test_vm_attach_sees_container_output(env: StreamEnv, vm_pod: tuple[str, str]) -> None:
    _, cid = vm_pod
    request = pb.AttachRequest(container_id=cid, stdout=True)
    client = SpdyClient(str(env.runtime.Attach(request, timeout=30).url))
    client.open(streamtype="error")
    out = client.open(streamtype="stdout")
    assert b"tick" in client.wait_data(out, b"tick", timeout=30)
    client.close()


def test_vm_port_forward(env: StreamEnv, vm_pod: tuple[str, str]) -> None:
    sandbox_id, _ = vm_pod
    client = SpdyClient(env.port_forward_url(sandbox_id, [8080]), protocols=("portforward.k8s.io",))
    assert client.answer.status == 101
    body = b""
    deadline = time.monotonic() + 30
    attempt = 0
    while b"hello-from-vm" not in body and time.monotonic() < deadline:
        attempt += 1
        error = client.open(streamtype="error", port="8080", requestid=str(attempt))
        data = client.open(streamtype="data", port="8080", requestid=str(attempt))
        client.write(data, b"GET / HTTP/1.0\r\n\r\n")
        body = client.read_all(data, timeout=30)
        client.read_all(error, timeout=30)
    assert b"hello-from-vm" in body
    refused = client.open(streamtype="error", port="9", requestid="refused")
    client.open(streamtype="data", port="9", requestid="refused")
    assert b"not requested" in client.read_all(refused, timeout=30)
    client.close()


def _listening(env: StreamEnv, cid: str, port: int) -> bool:
    """Whether a socket in the container listens on ``port`` (state 0A in /proc/net/tcp*)."""
    request = pb.ExecSyncRequest(
        container_id=cid, cmd=["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=30
    )
    table = env.runtime.ExecSync(request, timeout=60).stdout.decode()
    return any(
        len(f) > 3 and f[1].endswith(f":{port:04X}") and f[3] == "0A"
        for f in (line.split() for line in table.splitlines())
    )


def test_vm_port_forward_bulk_data_both_ways(env: StreamEnv, vm_pod: tuple[str, str]) -> None:
    """2 MiB through the agent's flow-controlled stream to nc in the pod, and back."""
    sandbox_id, cid = vm_pod
    env.runtime.ExecSync(
        pb.ExecSyncRequest(
            container_id=cid,
            cmd=["sh", "-c", "nc -l -p 9000 -e cat >/dev/null 2>&1 &"],
            timeout=30,
        ),
        timeout=60,
    )
    wait_for(lambda: _listening(env, cid, 9000), 60, "nc to listen on port 9000")
    client = SpdyClient(env.port_forward_url(sandbox_id, []), protocols=("portforward.k8s.io",))
    refused = client.open(streamtype="error", port="9", requestid="refused")
    client.open(streamtype="data", port="9", requestid="refused")
    assert b"refused" in client.read_all(refused, timeout=30).lower()
    client.open(streamtype="error", port="9000", requestid="bulk")
    data = client.open(streamtype="data", port="9000", requestid="bulk")
    payload = os.urandom(2 << 20)
    for start in range(0, len(payload), 32768):
        client.write(data, payload[start : start + 32768])
    echoed = client.wait_bytes(data, len(payload), timeout=120)
    client.close()
    assert len(echoed) == len(payload) and echoed == payload


def test_vm_client_hang_up_kills_the_exec(env: StreamEnv, vm_pod: tuple[str, str]) -> None:
    _, cid = vm_pod
    url = env.exec_url(cid, ["sh", "-c", "echo started; exec sleep 1234"], stdout=True)
    client = SpdyClient(url)
    client.open(streamtype="error")
    out = client.open(streamtype="stdout")
    assert b"started" in client.wait_data(out, b"started", timeout=60)
    client.close()

    def gone() -> bool:
        request = pb.ExecSyncRequest(container_id=cid, cmd=["ps"], timeout=30)
        return b"sleep 1234" not in env.runtime.ExecSync(request, timeout=60).stdout

    wait_for(gone, 30, "the exec'd process to die with its client")
