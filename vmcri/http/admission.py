"""Admission of streaming connections: every request head is read by one thread, under a deadline.

A connection proves nothing until its request head names a valid token, so until then it
gets no thread and no session slot. One selector thread accepts connections and reads all
pending heads without blocking; a complete head goes to the server (``on_head``), which
checks the token and only then starts a session thread, under a separate limit
(``ServerLimits.max_sessions``). A client that never authenticates can therefore hold, at
most, a pending slot for ``head_timeout_s``, never a session slot::

    accept ──▶ pending (fd + ≤20 KiB, no thread) ──head──▶ on_head: token? ──▶ session thread
                 │ head_timeout_s from accept: 408                       └─ no: 404 / 503
                 └ over a peer's share, or over max_pending: oldest pending dropped (503)

Why these rules hold against slow clients (slowloris):

* The head timeout counts from accept for the whole head, like Go's
  ``http.Server.ReadHeaderTimeout`` (one read deadline set before the head is read):
  bytes trickled in do not extend it. kubelet's own streaming server sets none and lives
  on cheap goroutines; here every session is a thread, so the head phase must be cheap.
* When a peer already has its share of pending connections, or the pool is full, the
  *oldest* pending connection is dropped instead of refusing the newest. A refusal would let
  whoever fills the pool first lock everyone out; on loopback kubelet and a local attacker
  (a host-network pod) even share the address 127.0.0.1, so per-peer refusal would too.
  A client that sends its head in one go, as client-go does, is read in the next selector
  round before more than ``ACCEPT_BATCH`` new connections are accepted, and a connection
  is only dropped after ``max_pending_per_peer`` newer ones from its peer (or
  ``max_pending`` from all), so slow clients can delay it by a round, never lock it out.
* Peers are IPv4 addresses or IPv6 /64 networks (one host usually owns a whole /64).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from vmcri.errors import InvalidArgument
from vmcri.http.io import HeadBuffer, HttpRequest, response

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

ACCEPT_BATCH = 8  # connections accepted per selector round; below max_pending_per_peer
RECV_CHUNK = 4096  # per read of a head; what follows the head stays in the socket
WARN_INTERVAL_S = 60.0  # at most one warning of each kind per interval
# After accept fails for want of fds (EMFILE, ENFILE, ENOBUFS...), the listener stays
# readable, so selecting on it again at once would spin the thread and flood the log.
# Accepting pauses instead, while pending heads are still read and timed out (which is
# what frees fds), and resumes on its own.
ACCEPT_PAUSE_S = 0.25


@dataclass(frozen=True)
class AdmissionLimits:
    head_timeout_s: float = 2.5  # from accept to the end of the request head, however it trickles
    max_pending: int = 128  # connections still sending their head, all peers together
    max_pending_per_peer: int = 32  # of those, from one IPv4 address or IPv6 /64
    backlog: int = 128  # the kernel's queue of connections not yet accepted

    def __post_init__(self) -> None:
        if not 0 < self.max_pending_per_peer <= self.max_pending:
            raise InvalidArgument("max_pending_per_peer: must be between 1 and max_pending")
        if self.head_timeout_s <= 0:
            raise InvalidArgument("head_timeout_s: must be positive")


def peer_key(address: str) -> str:
    """The unit a per-peer limit counts: an IPv4 address, or the /64 of an IPv6 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class PendingPool(Generic[K]):
    """Which pending connections exist, per peer, oldest first; pure bookkeeping.

    All connections get the same timeout, so the oldest is also the first to expire.
    """

    limits: AdmissionLimits
    _deadlines: dict[K, float] = field(default_factory=dict, init=False)  # in order of age
    _peers: dict[K, str] = field(default_factory=dict, init=False)
    _by_peer: dict[str, dict[K, None]] = field(default_factory=dict, init=False)

    def __len__(self) -> int:
        return len(self._deadlines)

    def add(self, key: K, peer: str, now: float) -> list[K]:
        """Record ``key``; returns the older keys to drop so that it fits (already removed)."""
        dropped: list[K] = []
        mine = self._by_peer.get(peer, {})
        if len(mine) >= self.limits.max_pending_per_peer:
            dropped.append(next(iter(mine)))
            self.remove(dropped[-1])
        if len(self._deadlines) >= self.limits.max_pending:
            dropped.append(next(iter(self._deadlines)))
            self.remove(dropped[-1])
        self._deadlines[key] = now + self.limits.head_timeout_s
        self._peers[key] = peer
        self._by_peer.setdefault(peer, {})[key] = None
        return dropped

    def remove(self, key: K) -> None:
        if self._deadlines.pop(key, None) is None:
            return
        peer = self._peers.pop(key)
        mine = self._by_peer[peer]
        del mine[key]
        if not mine:
            del self._by_peer[peer]

    def expired(self, now: float) -> list[K]:
        """Keys whose deadline has passed (still recorded; the caller removes them)."""
        late: list[K] = []
        for key, deadline in self._deadlines.items():
            if deadline > now:
                break
            late.append(key)
        return late

    def next_deadline(self) -> float | None:
        return next(iter(self._deadlines.values()), None)

    def count(self, peer: str) -> int:
        return len(self._by_peer.get(peer, {}))


OnHead = Callable[[socket.socket, HttpRequest], None]


class HeadReader:
    """Accepts on ``listener`` and calls ``on_head(sock, request)`` for each complete head.

    ``on_head`` runs on the reader's thread, so it must not block; it owns the socket from
    then on (blocking mode, no timeout). Everything else is answered and closed here.
    """

    def __init__(self, listener: socket.socket, limits: AdmissionLimits, on_head: OnHead) -> None:
        self._listener = listener
        self._limits = limits
        self._on_head = on_head
        self._pool: PendingPool[socket.socket] = PendingPool(limits)
        self._heads: dict[socket.socket, HeadBuffer] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streaming-accept", daemon=True)
        self._last_warning = -WARN_INTERVAL_S
        self._last_accept_warning = -WARN_INTERVAL_S
        self._accept_paused_until: float | None = None

    def start(self) -> None:
        self._listener.setblocking(False)
        self._listener.listen(self._limits.backlog)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every pending connection; returns when the thread is done."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join()

    @property
    def pending(self) -> int:
        """How many connections are still sending their head (for tests and logs)."""
        return len(self._pool)

    # ---- the selector thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._round()
        except Exception:
            log.exception("streaming accept loop failed")
        finally:
            for sock in list(self._heads):
                self._forget(sock)
                sock.close()
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _round(self) -> None:
        deadlines = [self._pool.next_deadline(), self._accept_paused_until]
        deadline = min((d for d in deadlines if d is not None), default=None)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        accept = False
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._listener:
                accept = True
            elif key.fileobj is not self._wake_r:
                self._read(key.fileobj)  # type: ignore[arg-type]
        # Reads before accepts: a head that arrived is handed on before new connections
        # can push its connection out of the pool.
        if accept:
            self._accept()
        now = time.monotonic()
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ)
        for sock in self._pool.expired(now):
            self._forget(sock)
            secs = self._limits.head_timeout_s
            refuse(sock, 408, f"request head not received within {secs:g}s\n")

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep serving who is already here
                self._pause_accepting(exc)
                return
            sock.setblocking(False)
            peer = peer_key(str(address[0]))
            for old in self._pool.add(sock, peer, time.monotonic()):
                self._warn_dropping(peer)
                self._forget(old)
                refuse(old, 503, "too many connections still sending their request head\n")
            self._heads[sock] = HeadBuffer()
            self._selector.register(sock, selectors.EVENT_READ)

    def _pause_accepting(self, exc: OSError) -> None:
        now = time.monotonic()
        self._selector.unregister(self._listener)
        self._accept_paused_until = now + ACCEPT_PAUSE_S
        if now - self._last_accept_warning >= WARN_INTERVAL_S:
            self._last_accept_warning = now
            log.warning(
                "streaming: accept failed, pausing accepts for %gs: %s", ACCEPT_PAUSE_S, exc
            )

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(sock)
            sock.close()
            return
        try:
            request = self._heads[sock].feed(data)
        except InvalidArgument as exc:
            self._forget(sock)
            refuse(sock, 400, f"{exc.message}\n")
            return
        if request is None:
            return
        self._forget(sock)
        sock.setblocking(True)
        try:
            self._on_head(sock, request)
        except Exception:
            log.exception("streaming: handing on a request failed")
            sock.close()

    def _forget(self, sock: socket.socket) -> None:
        self._pool.remove(sock)
        self._heads.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _warn_dropping(self, peer: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL_S:
            self._last_warning = now
            log.warning(
                "streaming: dropping the oldest connections that have not sent a request "
                "head (peer %s has %d pending, %d in all; limits %d per peer, %d in all)",
                peer,
                self._pool.count(peer),
                len(self._pool),
                self._limits.max_pending_per_peer,
                self._limits.max_pending,
            )


def refuse(
    sock: socket.socket, status: int, body: str, headers: list[tuple[str, str]] | None = None
) -> None:
    """Answer ``status`` without blocking (the answer fits a socket buffer) and close."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(response(status, headers, body))
        sock.shutdown(socket.SHUT_WR)
    sock.close()
