"""Exec, tty exec, attach and port-forward through the real daemon into runc pods."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from tests.integration.daemon.conftest import start_daemon, stop_daemon
from tests.integration.streaming.clients import SpdyClient, WebSocketClient, spdy_exec, ws_exec
from tests.integration.streaming.conftest import StreamEnv
from tests.support.wait import wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration
# Polls the terminal until the client's resize (45 rows, 123 columns) has arrived, at most
# 10 s, then prints its size; the tty's echo of this line cannot contain "45 123".
AWAIT_RESIZE = (
    'i=0; until [ "$(stty size)" = "$((40+5)) $((120+3))" ] || [ $i -ge 200 ]; '
    "do sleep 0.05; i=$((i+1)); done; stty size"
)

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
    url = env.exec_url(cid, ["sh", "-c", AWAIT_RESIZE], tty=True, stdin=True, stdout=True)
    client = SpdyClient(url)
    error = client.open(streamtype="error")
    client.open(streamtype="stdin")
    sout = client.open(streamtype="stdout")
    resize = client.open(streamtype="resize")
    client.write(resize, json.dumps({"Width": 123, "Height": 45}).encode())
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

    def code(call: Callable[..., object], request: Message) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        return info.value.code()

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
    assert code(rt.Attach, pb.AttachRequest(container_id="nope", stdout=True)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code(rt.Attach, pb.AttachRequest(container_id=cid)) == (grpc.StatusCode.INVALID_ARGUMENT)
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


# ---- attach: the monitor owns the container's stdio -----------------------------------------

POD_NAME = "runc-stream"


def _pod_config(env: StreamEnv) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=POD_NAME, uid=f"uid-{POD_NAME}", namespace="stream"),
        hostname=POD_NAME,
        log_directory=str(env.tmp / "logs" / POD_NAME),
    )


def _attachable(
    env: StreamEnv,
    sandbox_id: str,
    name: str,
    command: list[str],
    *,
    tty: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
) -> str:
    """A started container with tty/stdin/stdin_once as given."""
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=env.image),
        command=command,
        log_path=f"{name}.log",
        tty=tty,
        stdin=stdin,
        stdin_once=stdin_once,
    )
    request = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=_pod_config(env)
    )
    cid = env.runtime.CreateContainer(request, timeout=120).container_id
    env.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return str(cid)


def _log(env: StreamEnv, name: str) -> str:
    path = Path(env.tmp / "logs" / POD_NAME / f"{name}.log")
    return path.read_text(errors="replace") if path.exists() else ""


def _attach(env: StreamEnv, cid: str, *, tty: bool = False) -> tuple[SpdyClient, int, int]:
    """An attach session with stdin and stdout (and no stderr with a tty): client, stdin, stdout."""
    request = pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=not tty, tty=tty)
    client = SpdyClient(str(env.runtime.Attach(request, timeout=30).url))
    assert client.answer.status == 101
    client.open(streamtype="error")
    sin = client.open(streamtype="stdin")
    sout = client.open(streamtype="stdout")
    if not tty:
        client.open(streamtype="stderr")
    return client, sin, sout


def _state(env: StreamEnv, cid: str) -> pb.ContainerStatus:
    response: pb.ContainerStatusResponse = env.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid)
    )
    return response.status


def test_attach_tty_shell_runs_typed_commands_and_sees_resize(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    sandbox_id, _ = pod
    cid = _attachable(env, sandbox_id, "tty-sh", ["sh"], tty=True, stdin=True)
    client, sin, sout = _attach(env, cid, tty=True)
    resize = client.open(streamtype="resize")
    client.write(resize, json.dumps({"Width": 123, "Height": 45}).encode())
    client.write(sin, AWAIT_RESIZE.encode() + b"; echo sum-$((40+2))\r")
    output = client.wait_data(sout, b"sum-42")
    assert b"sum-42" in output, output
    assert b"45 123" in output, output
    client.close()
    # Detached, not stopped: a second session drives the same shell (a detach that
    # killed it would fail the echo below).
    assert _state(env, cid).state == pb.CONTAINER_RUNNING
    again, sin2, sout2 = _attach(env, cid, tty=True)
    again.write(sin2, b"echo again-$((1+1))\r")
    again.open(streamtype="resize")  # a tty session has all its streams before it starts
    assert b"again-2" in again.wait_data(sout2, b"again-2")
    again.close()
    assert wait_until(lambda: "again-2" in _log(env, "tty-sh"), 10)
    assert " stdout " in _log(env, "tty-sh")  # tty output is logged as stdout
    env.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)


def test_attach_stdin_reaches_cat_and_its_log_and_clients_come_and_go(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    sandbox_id, _ = pod
    cid = _attachable(env, sandbox_id, "cat", ["cat"], stdin=True)
    first, sin1, sout1 = _attach(env, cid)
    watcher, _, sout_w = _attach(env, cid)  # a second client sees the output too
    first.write(sin1, b"hello-cat\n")
    assert b"hello-cat\n" in first.wait_data(sout1, b"hello-cat\n")

    # The watcher's session may reach the monitor a moment after its streams opened:
    # output written before that is not replayed (attach has no backlog, as in kubelet).
    def watcher_sees_tick() -> bool:
        first.write(sin1, b"tick\n")
        with contextlib.suppress(TimeoutError):
            watcher.wait_data(sout_w, b"tick\n", timeout=0.5)
        return b"tick\n" in watcher.wait_data(sout_w, b"", timeout=0)

    assert wait_until(watcher_sees_tick, 15)
    first.close()
    watcher.close()
    assert wait_until(lambda: "stdout F hello-cat" in _log(env, "cat"), 10), _log(env, "cat")
    # Without stdin_once stdin stays open: cat, had it seen EOF, could not echo below.
    assert _state(env, cid).state == pb.CONTAINER_RUNNING
    request = pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)
    second = WebSocketClient(str(env.runtime.Attach(request, timeout=30).url))
    assert second.answer.status == 101
    second.send(0, b"second\n")
    assert b"second\n" in second.wait_channel(1, b"second\n")
    second.close()
    assert wait_until(lambda: "stdout F second" in _log(env, "cat"), 10)


def test_stdin_once_closes_stdin_when_the_session_detaches(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    sandbox_id, _ = pod
    cid = _attachable(env, sandbox_id, "once", ["cat"], stdin=True, stdin_once=True)
    client, sin, sout = _attach(env, cid)
    client.write(sin, b"only-once\n")
    assert b"only-once" in client.wait_data(sout, b"only-once")
    client.close()  # detach without sending EOF: stdin_once closes stdin anyway
    assert wait_until(lambda: _state(env, cid).state == pb.CONTAINER_EXITED, 20)
    assert _state(env, cid).exit_code == 0
    assert "stdout F only-once" in _log(env, "once")


def test_attach_to_exited_container_is_failed_precondition(
    env: StreamEnv, pod: tuple[str, str]
) -> None:
    sandbox_id, _ = pod
    cid = _attachable(env, sandbox_id, "done", ["true"], stdin=True)
    assert wait_until(lambda: _state(env, cid).state == pb.CONTAINER_EXITED, 20)
    request = pb.AttachRequest(container_id=cid, stdout=True)
    with pytest.raises(grpc.RpcError) as info:
        env.runtime.Attach(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_attach_after_daemon_restart(env: StreamEnv, pod: tuple[str, str]) -> None:
    """Last in this module: it replaces the module's daemon."""
    sandbox_id, _ = pod
    cid = _attachable(env, sandbox_id, "survivor", ["cat"], stdin=True)
    stop_daemon(env.daemon)
    env.daemon = start_daemon(env.tmp, config=env.tmp / "config.toml")
    client, sin, sout = _attach(env, cid)
    client.write(sin, b"after-restart\n")
    assert b"after-restart" in client.wait_data(sout, b"after-restart")
    client.close()
    assert wait_until(lambda: "stdout F after-restart" in _log(env, "survivor"), 10)
