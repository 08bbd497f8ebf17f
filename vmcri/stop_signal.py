"""Waiting in the main thread for the signal that stops the daemon.

CPython runs a Python signal handler only in the main thread, and only once that thread
runs bytecode again. The kernel may hand a process-directed signal to any thread that does
not block it (gRPC's, libvirt's event loop, a template build), and that does not wake a
main thread asleep on a lock: a ``threading.Event.wait()`` there never returns, and the
daemon ignores its SIGTERM (seen once in CI, the process alive until a second signal).

The C-level handler writes the signal's number to the wake-up fd whichever thread took it,
so the main thread sleeps reading that fd and decides from the bytes it reads, not from a
Python handler that may not have run yet.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterable


class StopSignals:
    """Made in the main thread before the daemon starts: a stop signal that arrives while
    it starts is kept, and :meth:`wait` returns at once for it."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._wanted = {int(s) for s in signals}
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for number in self._wanted:
            # A handler that does nothing: the default would end the process at once
            signal.signal(number, lambda signum, frame: None)

    def wait(self) -> signal.Signals:
        """Block until one of the signals has arrived (other signals' bytes are skipped)."""
        while True:
            for number in self._reader.recv(64):
                if number in self._wanted:
                    return signal.Signals(number)
