"""The HTTP server of the ``[metrics]`` endpoint: bounded in connections, time, fds and threads.

Whoever reaches the port is a client of no trust (on loopback: any local user, any
host-network pod). prometheus_client's own server spent a thread and an fd per connection
with no cap and no time-out, so connections that never finished their request left the
daemon without fds or threads to answer ``Version``. Here the endpoint has two threads,
whatever clients do, and a bounded number of fds::

    accept ──▶ pending (no thread) ──head──▶ GET /metrics? ──▶ writing (no thread) ──▶ close
      │         └ half the time-out from accept: 408        └ no: 404/405   └ rest of the time-out
      └ over max_connections pending: oldest dropped (503)     over max_connections: 503

* Request heads are read by the streaming server's :class:`HeadReader` (one selector
  thread, a deadline from accept however slowly bytes trickle, a per-peer share, the
  oldest pending connection dropped when full): a slowloris client holds an fd for half
  of ``request_timeout_s`` at most, and cannot lock out a scrape, whose head arrives at
  once and is read before more connections are accepted.
* Answers are written by one writer thread without blocking, under the rest of the time
  limit, so a client that does not read holds an fd, never a thread. The text is
  generated at most once per ``CACHE_S``, so a flood of complete requests costs copies,
  not collections.
* fds: at most ``max_connections`` pending plus as many being written, and the bound is
  cut to an eighth of the process's RLIMIT_NOFILE: the CRI keeps the rest.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from vmcri.errors import ConfigError
from vmcri.http.admission import AdmissionLimits, HeadReader, refuse
from vmcri.http.io import HttpRequest
from vmcri.metrics.address import check_metrics_address
from vmcri.metrics.families import REGISTRY

log = logging.getLogger(__name__)

CACHE_S = 0.25  # one collection serves every scrape within this long
FD_SHARE = 8  # the endpoint's fds stay under 1/FD_SHARE of RLIMIT_NOFILE's soft limit
SPARE_FDS = 8  # listener, selectors, wake-up pairs
BACKLOG = 512


@dataclass(frozen=True)
class MetricsLimits:
    max_connections: int = 64  # pending (still sending a head), and again being written
    request_timeout_s: float = 10.0  # accept to last byte written: half for the head

    def bounded_by_fds(self, nofile: int) -> MetricsLimits:
        """These limits, with ``max_connections`` cut so every fd fits 1/FD_SHARE of ``nofile``."""
        most = max(1, (nofile // FD_SHARE - SPARE_FDS) // 2)
        if self.max_connections <= most:
            return self
        return MetricsLimits(most, self.request_timeout_s)

    def admission(self) -> AdmissionLimits:
        per_peer = max(1, self.max_connections // 2)
        return AdmissionLimits(
            head_timeout_s=self.request_timeout_s / 2,
            max_pending=self.max_connections,
            max_pending_per_peer=per_peer,
            # Not yet accepted: kernel memory, no fd of ours. A full queue drops SYNs, and
            # a scrape's retried SYN waits a second or more, so the queue is long.
            backlog=BACKLOG,
        )


class MetricsServer:
    def __init__(
        self,
        address: str,
        allow_non_loopback: bool,
        collectors: Sequence[Collector] = (),
        limits: MetricsLimits | None = None,
    ) -> None:
        self._address = check_metrics_address(address, allow_non_loopback)
        self._collectors = tuple(collectors)  # registered while the server runs
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        wanted = limits or MetricsLimits()
        self.limits = wanted.bounded_by_fds(nofile)
        if self.limits != wanted:
            log.warning(
                "metrics: max_connections cut to %d (RLIMIT_NOFILE %d)",
                self.limits.max_connections,
                nofile,
            )
        self._reader: HeadReader | None = None
        self._writer: _Writer | None = None
        self.port = 0

    def start(self) -> None:
        """Listen; raises ConfigError when the address cannot be bound."""
        host, port = self._address
        try:
            found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            family, kind, proto, _, sockaddr = found[0]
            listener = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError(f"metrics.address: cannot listen on {host}:{port}: {exc}") from exc
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
        except OSError as exc:
            listener.close()
            raise ConfigError(f"metrics.address: cannot listen on {host}:{port}: {exc}") from exc
        self.port = listener.getsockname()[1]
        self._writer = _Writer(self.limits, _CachedText(lambda: generate_latest(REGISTRY)))
        self._writer.start()
        self._reader = HeadReader(listener, self.limits.admission(), self._writer.submit)
        self._reader.start()
        for collector in self._collectors:
            REGISTRY.register(collector)
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        for collector in self._collectors:
            with contextlib.suppress(KeyError):  # start() failed before registering it
                REGISTRY.unregister(collector)
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None


class _CachedText:
    """The exposition text, collected again only when older than CACHE_S."""

    def __init__(self, collect: Callable[[], bytes]) -> None:
        self._collect = collect
        self._text = b""
        self._at = -CACHE_S

    def get(self) -> bytes:
        now = time.monotonic()
        if now - self._at >= CACHE_S:
            self._text = self._collect()
            self._at = now
        return self._text


def _ok(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Type: {CONTENT_TYPE_LATEST}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class _Answer:
    data: memoryview
    deadline: float


class _Writer:
    """One thread: answers complete requests, writing without blocking until a deadline."""

    def __init__(self, limits: MetricsLimits, text: _CachedText) -> None:
        self._limits = limits
        self._text = text
        self._lock = threading.Lock()
        self._count = 0  # connections submitted and not yet closed
        self._queue: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._answers: dict[socket.socket, _Answer] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-writer", daemon=True)

    def start(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, sock: socket.socket, request: HttpRequest) -> None:
        """On the head reader's thread: route, and queue the answer; never blocks."""
        if request.path != "/metrics":
            refuse(sock, 404, "not found; metrics are at /metrics\n")
            return
        if request.method != "GET":
            refuse(sock, 405, "method not allowed\n", [("Allow", "GET")])
            return
        with self._lock:
            if self._count >= self._limits.max_connections:
                full = True
            else:
                full = False
                self._count += 1
        if full:
            refuse(sock, 503, "too many metrics requests being answered\n")
            return
        self._queue.put(sock)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._round()
        except Exception:
            log.exception("metrics writer failed")
        finally:
            for sock in list(self._answers):
                self._close(sock)
            while not self._queue.empty():
                self._queue.get_nowait().close()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _round(self) -> None:
        deadlines = [a.deadline for a in self._answers.values()]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                self._send(key.fileobj)  # type: ignore[arg-type]
        while not self._queue.empty():
            self._begin(self._queue.get_nowait())
        now = time.monotonic()
        for sock, answer in list(self._answers.items()):
            if answer.deadline <= now:
                self._close(sock)

    def _begin(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + self._limits.request_timeout_s / 2
        try:
            data = _ok(self._text.get())
        except Exception:
            log.exception("metrics: collecting failed")
            with self._lock:
                self._count -= 1
            refuse(sock, 500, "collecting metrics failed\n")
            return
        sock.setblocking(False)
        self._answers[sock] = _Answer(memoryview(data), deadline)
        self._selector.register(sock, selectors.EVENT_WRITE)
        self._send(sock)

    def _send(self, sock: socket.socket) -> None:
        answer = self._answers[sock]
        try:
            sent = sock.send(answer.data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sock)
            return
        answer.data = answer.data[sent:]
        if not answer.data:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self._answers.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
        with self._lock:
            self._count -= 1
