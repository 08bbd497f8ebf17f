"""The metrics endpoint's own HTTP server: answers scrapes, and stays within its bounds
(connections, time, threads) whatever clients do."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.support.wait import wait_for
from vmcri.metrics.server import FD_SHARE, MetricsLimits, MetricsServer

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def _start(limits: MetricsLimits) -> MetricsServer:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = MetricsServer(f"127.0.0.1:{port}", False, (), limits)
    srv.start()
    return srv


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def test_a_scrape_gets_the_exposition_text_and_other_paths_404() -> None:
    srv = _start(MetricsLimits(8, 4.0))
    try:
        assert "vmcri_cri_requests" in _scrape(srv.port)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/other", timeout=10)
        assert missing.value.code == 404
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"POST /metrics HTTP/1.1\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 405")
    finally:
        srv.stop()


def test_silent_connections_over_the_cap_do_not_lock_out_a_scrape_nor_add_threads() -> None:
    srv = _start(MetricsLimits(8, 4.0))
    threads = threading.active_count()
    silent: list[socket.socket] = []
    try:
        for _ in range(40):
            silent.append(socket.create_connection(("127.0.0.1", srv.port)))
        assert "vmcri_cri_requests" in _scrape(srv.port)
        assert threading.active_count() == threads
        # The oldest silent ones were dropped (503) to make room; none was given a thread.
        answers = [_answer(s) for s in silent[:8]]
        assert all(a.startswith(b"HTTP/1.1 503") or a.startswith(b"HTTP/1.1 408") for a in answers)
    finally:
        for sock in silent:
            sock.close()
        srv.stop()


def test_a_head_trickled_past_its_half_of_the_time_limit_is_cut() -> None:
    srv = _start(MetricsLimits(8, 1.0))
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            answer = _answer(sock)
            assert answer.startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 3.0
    finally:
        srv.stop()


def test_clients_that_do_not_read_hold_no_thread_and_are_closed() -> None:
    srv = _start(MetricsLimits(8, 1.0))
    readers: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", srv.port))
            sock.sendall(GET)
            readers.append(sock)
        # The writer holds them (the answer may not fit the buffers) without a thread each,
        # and never past its deadline: a scrape is answered meanwhile and after.
        assert "vmcri_cri_requests" in _scrape(srv.port)
        for sock in readers:
            sock.settimeout(10)
            wait_for(lambda s=sock: _drained(s), 10, "the server's close")  # type: ignore[misc]
    finally:
        for sock in readers:
            sock.close()
        srv.stop()


def _drained(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_connections_are_cut_to_an_eighth_of_the_fd_limit() -> None:
    limits = MetricsLimits(max_connections=4096).bounded_by_fds(1024)
    assert 2 * limits.max_connections + 8 <= 1024 // FD_SHARE
    assert MetricsLimits(max_connections=16).bounded_by_fds(1024).max_connections == 16
