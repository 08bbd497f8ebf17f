"""A local user floods the metrics endpoint: it must not starve the CRI.

With ``[metrics]`` on, the endpoint listens on loopback without authentication, so any
local user reaches it. The attacker here is ``nobody`` (setpriv), in a process of its
own: it opens many more connections than the server's cap and keeps them open, some
silent and some trickling a request head a byte at a time (slowloris), reopening each one
the server cuts. Meanwhile ``Version`` and a scrape must answer promptly, and the
daemon's open fds must stay within the server's bound (prometheus_client's own server
spent a thread and an fd on each: 20,000 connections left the daemon without either).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.integration.harness import NO_POD_NETWORK
from tests.integration.service.conftest import free_loopback_port
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
CONNECTIONS = 3000  # silent ones; far above the cap (64 pending + 64 answered)
SLOWLORIS = 200  # trickling ones
PROMPT_S = 2.0  # the CRI, which the flood must not touch
# A scrape shares the flooded endpoint (and a peer address) with the attacker: it is served,
# not starved, but a SYN dropped while the accept queue is full costs a retransmit (1 s,
# then 2 s more), which a loaded CI machine shows.
SCRAPE_S = 5.0
ATTACK_S = 5.0  # how long Version and scrapes are timed under attack
FD_SLACK = 16  # listener, selectors, wake-up pairs, a CRI channel or two

# Runs as nobody with -S: the standard library only. Prints "ready" once every
# connection was opened once, then keeps them open (reopening what the server closes)
# until its stdin closes.
ATTACKER = r"""
import selectors, socket, sys
port, silent, slow = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
def connect(i):
    s = socket.socket()
    s.bind((f"127.0.0.{1 + i % 4}", 0))  # four peers: more than one peer's share
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    sel.register(s, selectors.EVENT_READ, i)
    return s
conns = [connect(i) for i in range(silent + slow)]
sel.register(sys.stdin, selectors.EVENT_READ, -1)
print("ready", flush=True)
head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100000
sent = [0] * len(conns)
reopened = 0
def reopen(i):
    global reopened
    sel.unregister(conns[i])
    conns[i].close()
    conns[i], sent[i] = connect(i), 0
    reopened += 1
while True:
    events = sel.select(0.2)
    if any(key.data == -1 for key, _ in events):
        break
    for key, _ in events:  # what the server answered or closed: reopen it
        try:
            data = key.fileobj.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            reopen(key.data)
    for i in range(silent, len(conns)):  # the slowloris ones: one byte each round
        try:
            sent[i] += conns[i].send(head[sent[i]:sent[i] + 1])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            reopen(i)
print(f"reopened {reopened}", flush=True)
"""


@pytest.fixture
def daemon() -> Iterator[tuple[RunningDaemon, int]]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to play the user nobody")
    tmp = Path(tempfile.mkdtemp(prefix="vmcri-metrics-", dir="/tmp"))
    port = free_loopback_port()
    config = tmp / "config.toml"
    config.write_text(f'[metrics]\naddress = "127.0.0.1:{port}"\n{NO_POD_NETWORK}')
    running = start_daemon(tmp, config=config)
    try:
        yield running, port
    finally:
        stop_daemon(running)
        shutil.rmtree(tmp, ignore_errors=True)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _timed_scrape(port: int) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert "vmcri_cri_requests" in response.read().decode()
    return time.monotonic() - started


def test_a_connection_flood_by_nobody_neither_starves_the_cri_nor_the_scrape(
    daemon: tuple[RunningDaemon, int],
) -> None:
    running, port = daemon
    pid = running.process.pid
    runtime = running.runtime()
    runtime.Version(pb.VersionRequest(), timeout=30)
    baseline = _fds(pid)
    attacker = subprocess.Popen(
        [
            *NOBODY,
            sys.executable,
            "-S",
            "-c",
            ATTACKER,
            str(port),
            str(CONNECTIONS),
            str(SLOWLORIS),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline() == "ready\n"
        # The attack is on once the server holds as many connections as it takes.
        most_fds = wait_for(lambda: (n := _fds(pid)) >= baseline + 64 and n, 60, "a full pool")
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline:
            started = time.monotonic()
            runtime.Version(pb.VersionRequest(), timeout=30)
            version_s = time.monotonic() - started
            scrape_s = _timed_scrape(port)
            most_fds = max(most_fds, _fds(pid))
            print(f"Version {version_s:.3f} s, scrape {scrape_s:.3f} s, fds {most_fds}")
            assert version_s < PROMPT_S and scrape_s < SCRAPE_S
        # 64 pending and 64 being answered at most (the defaults), however many come.
        assert most_fds <= baseline + 2 * 64 + FD_SLACK, (baseline, most_fds)
        assert attacker.poll() is None  # the attack was still going on
        attacker.stdin.close()  # type: ignore[union-attr]
        reopened = int(attacker.stdout.readline().split()[1])
        print(f"the server cut {reopened} of the attacker's connections")
        assert reopened > 0  # dropped, timed out or answered: none held for good
    finally:
        if attacker.stdin is not None and not attacker.stdin.closed:
            attacker.stdin.close()
        try:
            attacker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            attacker.kill()
            attacker.wait()
