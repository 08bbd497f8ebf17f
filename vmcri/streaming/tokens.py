"""Single-use, expiring tokens that name a pending streaming request in its URL.

Like kubelet's request cache: the RPC stores the request and hands out a URL with a
random token; the HTTP client consumes it once, within the time to live. The store
is bounded: when full of live tokens, new requests are refused (ResourceExhausted)
rather than evicting ones a client may still be about to use.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from vmcri.errors import ResourceExhausted

T = TypeVar("T")

DEFAULT_TTL_S = 60.0
DEFAULT_CAPACITY = 1000
TOKEN_BYTES = 18  # 24 URL-safe characters


class TokenStore(Generic[T]):
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def issue(self, request: T) -> str:
        """Store ``request``; returns its token. Raises ResourceExhausted when full."""
        with self._lock:
            self._expire()
            if len(self._entries) >= self._capacity:
                raise ResourceExhausted(
                    f"too many pending streaming requests ({self._capacity}); retry shortly"
                )
            token = secrets.token_urlsafe(TOKEN_BYTES)
            self._entries[token] = (self._clock() + self._ttl, request)
            return token

    def consume(self, token: str) -> T | None:
        """The request behind ``token``, once; None when unknown, used or expired."""
        with self._lock:
            entry = self._entries.pop(token, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def peek(self, token: str) -> T | None:
        """The request behind ``token`` without using it up; None when unknown or expired."""
        with self._lock:
            entry = self._entries.get(token)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                return
            del self._entries[token]
