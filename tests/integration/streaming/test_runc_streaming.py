"""Exec, tty exec and port-forward through the real daemon into runc pods (SPDY, WebSocket)."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from tests.integration.streaming.clients import SpdyClient, WebSocketClient, spdy_exec, ws_exec
from tests.integration.streaming.conftest import StreamEnv, wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

HTTPD = (
    "mkdir -p /www && echo hello-from-pod > /www/index.html"
    " && exec httpd -f -p 127.0.0.1:8080 -h /www"
)


@pytest.fixture(scope="module")
def pod(env: StreamEnv) -> tuple[str, str]:
    sandbox_id, config = env.run_pod("runc-stream", "runc")
    container_id = env.run_container(sandbox_id, config, "web", ["sh", "-c", HTTPD])
    return sandbox_id, container_id


def test_exec_relays_stdin_stdout_stderr_and_exit_code(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    _, cid = pod
    cmd = ["sh", "-c", "cat; echo to-stderr >&2; exit 3"]
    url = env.exec_url(cid, cmd, stdin=True, stdout=True, stderr=True)
    assert url.startswith("http://127.0.0.1:")
    result = spdy_exec(url, stdin=b"hello\nworld\n")
    assert result.stdout == b"hello\nworld\n"
    assert result.stderr == b"to-stderr\n"
    assert result.status["reason"] == "NonZeroExitCode"
    assert result.status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


def test_exec_success_over_websocket(env: StreamEnv, pod: tuple[str, str]) -> None:
    _, cid = pod
    url = env.exec_url(cid, ["sh", "-c", "tr a-z A-Z"], stdin=True, stdout=True, stderr=True)
    result = ws_exec(url, stdin=b"shout\n")
    assert result.stdout == b"SHOUT\n"
    assert result.status == {"metadata": {}, "status": "Success"}


def test_exec_large_output_is_complete(env: StreamEnv, pod: tuple[str, str]) -> None:
    _, cid = pod
    url = env.exec_url(cid, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"], stdout=True)
    result = spdy_exec(url, stderr=False)
    assert result.stdout == b"x" * 3_000_000
    assert result.status["status"] == "Success"


def test_exec_tty_with_resize(env: StreamEnv, pod: tuple[str, str]) -> None:
    _, cid = pod
    url = env.exec_url(cid, ["sh", "-c", "read x; stty size"], tty=True, stdin=True, stdout=True)
    client = SpdyClient(url)
    error = client.open(streamtype="error")
    sin = client.open(streamtype="stdin")
    sout = client.open(streamtype="stdout")
    resize = client.open(streamtype="resize")
    client.write(resize, json.dumps({"Width": 123, "Height": 45}).encode())
    time.sleep(0.5)
    client.write(sin, b"go\r")
    status = json.loads(client.read_all(error))
    output = client.read_all(sout)
    client.close()
    assert status["status"] == "Success", (status, output)
    assert b"45 123" in output


def test_client_hang_up_kills_the_exec(env: StreamEnv, pod: tuple[str, str]) -> None:
    _, cid = pod
    url = env.exec_url(cid, ["sh", "-c", "echo started; exec sleep 1000"], stdout=True)
    client = SpdyClient(url)
    client.open(streamtype="error")
    out = client.open(streamtype="stdout")
    assert b"started" in client.wait_data(out, b"started")
    client.close()

    def gone() -> bool:
        result = env.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["ps"], timeout=10))
        return b"sleep 1000" not in result.stdout

    assert wait_until(gone, 15)


def test_port_forward_to_httpd(env: StreamEnv, pod: tuple[str, str]) -> None:
    sandbox_id, _ = pod
    url = env.port_forward_url(sandbox_id, [])
    client = SpdyClient(url, protocols=("portforward.k8s.io",))
    assert client.answer.status == 101
    assert client.answer.headers["x-stream-protocol-version"] == ["portforward.k8s.io"]

    def fetch(request_id: str) -> bytes:
        error = client.open(streamtype="error", port="8080", requestid=request_id)
        data = client.open(streamtype="data", port="8080", requestid=request_id)
        client.write(data, b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        body = client.read_all(data)
        assert client.read_all(error) == b""
        return body

    deadline = time.monotonic() + 20
    body = b""
    while b"hello-from-pod" not in body and time.monotonic() < deadline:
        body = fetch(str(int(time.monotonic() * 1000)))  # httpd may still be starting
    assert b"200 OK" in body and b"hello-from-pod" in body
    assert b"hello-from-pod" in fetch("second")  # several connections on one session
    refused = client.open(streamtype="error", port="9", requestid="closed")
    client.open(streamtype="data", port="9", requestid="closed")
    assert b"refused" in client.read_all(refused).lower()
    client.close()


def test_port_forward_over_websocket(env: StreamEnv, pod: tuple[str, str]) -> None:
    sandbox_id, _ = pod
    url = env.port_forward_url(sandbox_id, [8080]) + "?port=8080"
    client = WebSocketClient(url, protocols=("v4.channel.k8s.io",))
    assert client.answer.status == 101
    client.send(0, b"GET / HTTP/1.0\r\n\r\n")
    client.wait_closed()
    assert b"hello-from-pod" in client.channel(0)
    assert client.channel(1) == b"\x90\x1f"  # the port prefix, and no error after it


def test_rpc_validation(env: StreamEnv, pod: tuple[str, str]) -> None:
    sandbox_id, cid = pod
    rt = env.runtime

    def code(call, request) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        return info.value.code()  # type: ignore[no-any-return]

    assert code(rt.Exec, pb.ExecRequest(container_id="nope", cmd=["sh"], stdout=True)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code(rt.Exec, pb.ExecRequest(container_id=cid, stdout=True)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    tty_stderr = pb.ExecRequest(container_id=cid, cmd=["sh"], tty=True, stdout=True, stderr=True)
    assert code(rt.Exec, tty_stderr) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(rt.Exec, pb.ExecRequest(container_id=cid, cmd=["sh"])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code(rt.Attach, pb.AttachRequest(container_id=cid, stdout=True)) == (
        grpc.StatusCode.UNIMPLEMENTED
    )
    assert code(rt.PortForward, pb.PortForwardRequest(pod_sandbox_id="nope")) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code(rt.PortForward, pb.PortForwardRequest(pod_sandbox_id=sandbox_id, port=[0])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_exec_in_exited_container_is_failed_precondition(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    sandbox_id, _ = pod
    status = env.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
    cid = env.run_container(
        sandbox_id,
        pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name="runc-stream", uid="uid-runc-stream", namespace="stream"
            ),
            hostname="runc-stream",
            log_directory=str(env.tmp / "logs" / "runc-stream"),
        ),
        "quick",
        ["true"],
    )
    assert status.status.state == pb.SANDBOX_READY

    def exited() -> bool:
        state = env.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid)
        ).status.state
        return bool(state == pb.CONTAINER_EXITED)

    assert wait_until(exited, 20)
    with pytest.raises(grpc.RpcError) as info:
        env.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["sh"], stdout=True), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
