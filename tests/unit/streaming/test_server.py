"""The streaming server end to end on loopback, with a fake runtime behind it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.streaming.clients import SpdyClient, WebSocketClient, spdy_exec, ws_exec
from tests.support.streaming_runtime import FakeRuntime
from tests.support.wait import wait_for
from vmcri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from vmcri.streaming.server import ServerLimits, StreamingServer


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def server(runtime: FakeRuntime) -> Iterator[StreamingServer]:
    srv = StreamingServer(
        runtime, "127.0.0.1", 0, ServerLimits(creation_timeout_s=2.0, max_sessions=4)
    )
    srv.start()
    yield srv
    srv.stop()


def _exec(**kw: object) -> ExecRequest:
    base: dict[str, object] = dict(
        container_id="c1", cmd=("cat",), tty=False, stdin=True, stdout=True, stderr=True
    )
    base.update(kw)
    return ExecRequest(**base)  # type: ignore[arg-type]


def test_spdy_exec_relays_stdin_stdout_stderr_and_success(server: StreamingServer) -> None:
    result = spdy_exec(server.url_for(_exec()), stdin=b"ping\n")
    assert result.stdout == b"ping\n"
    assert result.stderr == b"hello from stderr\n"
    assert result.status == {"metadata": {}, "status": "Success"}


def test_spdy_exec_reports_non_zero_exit(server: StreamingServer, runtime: FakeRuntime) -> None:
    runtime.exit_code = 3
    result = spdy_exec(server.url_for(_exec(cmd=("sh", "-c", "exit 3"))), stdin=b"")
    assert result.status["status"] == "Failure"
    assert result.status["reason"] == "NonZeroExitCode"
    assert result.status["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert "[sh -c exit 3], exit code 3" in str(result.status["message"])


def test_spdy_tty_resize_reaches_the_process(server: StreamingServer, runtime: FakeRuntime) -> None:
    client = SpdyClient(server.url_for(_exec(tty=True, stderr=False)))
    error = client.open(streamtype="error")
    stdin = client.open(streamtype="stdin")
    stdout = client.open(streamtype="stdout")
    resize = client.open(streamtype="resize")
    client.write(resize, b'{"Width":100,"Height":40}\n{"Width":120,')
    client.write(resize, b'"Height":50}')
    assert b"size 120x50" in client.wait_data(stdout, b"size 120x50")
    client.write(stdin, b"", fin=True)
    assert json.loads(client.read_all(error))["status"] == "Success"
    assert runtime.processes[0].sizes == [(100, 40), (120, 50)]
    client.close()


def test_token_is_single_use_and_kind_bound(server: StreamingServer) -> None:
    url = server.url_for(_exec())
    spdy_exec(url, stdin=b"")
    again = SpdyClient(url)
    assert again.answer.status == 404
    wrong = server.url_for(_exec()).replace("/exec/", "/attach/")
    assert SpdyClient(wrong).answer.status == 404


def test_protocol_negotiation_failure_is_403(server: StreamingServer) -> None:
    client = SpdyClient(server.url_for(_exec()), protocols=("v9.channel.k8s.io",))
    assert client.answer.status == 403
    assert "v4.channel.k8s.io" in client.answer.headers["x-accepted-stream-protocol-versions"]


def test_missing_streams_time_out_and_close(server: StreamingServer) -> None:
    client = SpdyClient(server.url_for(_exec()))
    client.open(streamtype="error")
    client.wait_closed(timeout=10)  # raises TimeoutError if the server keeps it open
    assert client.closed


def test_client_hang_up_ends_the_session(server: StreamingServer, runtime: FakeRuntime) -> None:
    client = SpdyClient(server.url_for(_exec()))
    for role in ("error", "stdin", "stdout", "stderr"):
        client.open(streamtype=role)
    wait_for(lambda: runtime.processes, 5, "the session to start its process")
    client.close()
    assert runtime.processes[0].closed.wait(10)


def test_websocket_v5_exec(server: StreamingServer) -> None:
    result = ws_exec(server.url_for(_exec()), stdin=b"over websocket\n")
    assert result.stdout == b"over websocket\n"
    assert result.stderr == b"hello from stderr\n"
    assert result.status == {"metadata": {}, "status": "Success"}


def test_websocket_unknown_subprotocol_is_refused(server: StreamingServer) -> None:
    client = WebSocketClient(server.url_for(_exec()), protocols=("base64.channel.k8s.io",))
    assert client.answer.status == 400


def test_attach_url_serves_attach(server: StreamingServer) -> None:
    request = AttachRequest("c1", tty=False, stdin=True, stdout=True, stderr=False)
    result = spdy_exec(server.url_for(request), stdin=b"attached\n", stderr=False)
    assert result.stdout == b"attached\n"
    assert result.status["status"] == "Success"


def test_portforward_relays_and_reports_errors(server: StreamingServer) -> None:
    url = server.url_for(PortForwardRequest("pod1", ()))
    client = SpdyClient(url, protocols=("portforward.k8s.io",))
    assert client.answer.status == 101
    error = client.open(streamtype="error", port="8080", requestid="0")
    data = client.open(streamtype="data", port="8080", requestid="0")
    client.write(data, b"hello")
    assert client.wait_data(data, b"HELLO").startswith(b"HELLO")
    client.write(data, b"", fin=True)
    assert client.read_all(data) == b"HELLO"
    assert client.read_all(error) == b""
    refused_err = client.open(streamtype="error", port="1", requestid="1")
    client.open(streamtype="data", port="1", requestid="1")
    assert b"connection refused" in client.read_all(refused_err)
    bad_err = client.open(streamtype="error", port="99999", requestid="2")
    client.open(streamtype="data", port="99999", requestid="2")
    assert b"invalid port" in client.read_all(bad_err)
    client.close()


def test_portforward_only_requested_ports(server: StreamingServer) -> None:
    client = SpdyClient(
        server.url_for(PortForwardRequest("pod1", (80,))), protocols=("portforward.k8s.io",)
    )
    err = client.open(streamtype="error", port="81", requestid="0")
    client.open(streamtype="data", port="81", requestid="0")
    assert b"not requested" in client.read_all(err)
    client.close()


def test_session_limit_answers_503_and_keeps_the_token(server: StreamingServer) -> None:
    held = [SpdyClient(server.url_for(_exec())) for _ in range(4)]
    url = server.url_for(_exec())
    extra = SpdyClient(url)
    assert extra.answer.status == 503
    assert b"limit 4" in extra.answer.body
    held.pop().close()
    deadline = time.monotonic() + 10
    while (again := SpdyClient(url)).answer.status == 503 and time.monotonic() < deadline:
        again.close()  # the freed slot comes back when the session thread has ended
    assert again.answer.status == 101
    again.close()
    for client in held:
        client.close()


def test_pending_heads_take_no_session_slot(server: StreamingServer) -> None:
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    sessions = [SpdyClient(server.url_for(_exec())) for _ in range(4)]
    assert [s.answer.status for s in sessions] == [101] * 4
    for client in sessions:
        client.close()
    for sock in silent:
        sock.close()


def _raw(server: StreamingServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def test_malformed_and_oversize_heads_are_400(server: StreamingServer) -> None:
    assert _raw(server, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert b"malformed request line" in _raw(server, b"GARBAGE\r\n\r\n")
    oversize = _raw(server, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    assert oversize.startswith(b"HTTP/1.1 400") and b"request head over" in oversize


def test_unknown_path_404_and_wrong_method_405(server: StreamingServer) -> None:
    assert _raw(server, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    path = server.url_for(_exec()).split(str(server.port), 1)[1]
    answer = _raw(server, f"PUT {path} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 405") and b"Allow: GET, POST" in answer


def test_stop_closes_pending_connections(runtime: FakeRuntime) -> None:
    srv = StreamingServer(runtime, "127.0.0.1", 0)
    srv.start()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.sendall(b"GET /exec/")
    srv.stop()
    try:
        ended = sock.recv(100) == b""
    except ConnectionResetError:  # closed with the request bytes unread, or still queued
        ended = True
    assert ended
    sock.close()


def test_plain_http_without_upgrade_is_400(server: StreamingServer) -> None:
    url = server.url_for(_exec())
    path = url.split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_websocket_portforward_v4(server: StreamingServer) -> None:
    url = server.url_for(PortForwardRequest("pod1", ())) + "?port=8080&port=1"
    client = WebSocketClient(url, protocols=("v4.channel.k8s.io",))
    assert client.answer.status == 101
    assert client.answer.headers["sec-websocket-protocol"] == ["v4.channel.k8s.io"]
    port_8080, port_1 = b"\x90\x1f", b"\x01\x00"  # little-endian prefixes
    assert client.wait_channel(3, b"refused").startswith(port_1)
    assert b"connection refused" in client.channel(3)
    client.send(0, b"hello")
    assert client.wait_channel(0, b"HELLO") == port_8080 + b"HELLO"
    assert client.channel(1) == port_8080 and client.channel(2) == port_1
    client.close()


def test_websocket_portforward_needs_ports(server: StreamingServer) -> None:
    client = WebSocketClient(server.url_for(PortForwardRequest("pod1", ())), protocols=())
    assert client.answer.status == 400
    assert b"port" in client.answer.body
    limited = server.url_for(PortForwardRequest("pod1", (80,))) + "?port=81"
    assert WebSocketClient(limited, protocols=()).answer.status == 400


def test_one_pods_sessions_cannot_turn_another_pods_away(runtime: FakeRuntime) -> None:
    limits = ServerLimits(creation_timeout_s=2.0, max_sessions=4, max_sessions_per_pod=2)
    srv = StreamingServer(runtime, "127.0.0.1", 0, limits)
    srv.start()
    forward = ("portforward.k8s.io",)
    try:
        held = [
            SpdyClient(srv.url_for(PortForwardRequest("pod1", (80,))), protocols=forward)
            for _ in range(2)
        ]
        assert [c.answer.status for c in held] == [101, 101]
        url = srv.url_for(PortForwardRequest("pod1", (80,)))
        over = SpdyClient(url, protocols=forward)
        assert over.answer.status == 503
        assert b"pod sandbox pod1 (limit 2 per pod" in over.answer.body
        assert b"streaming.max_sessions_per_pod" in over.answer.body
        result = spdy_exec(srv.url_for(_exec(sandbox_id="pod2")), stdin=b"hi\n")
        assert result.stdout == b"hi\n"
        held.pop().close()
        deadline = time.monotonic() + 10
        while (again := SpdyClient(url, protocols=forward)).answer.status == 503:
            again.close()  # the token was kept; the slot comes back when the session ends
            assert time.monotonic() < deadline
        assert again.answer.status == 101
        again.close()
        for client in held:
            client.close()
    finally:
        srv.stop()
