"""The CRI container log file: one record per line, as kubelet reads it.

Format of a record::

    <RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\\n

``F`` ends a line; ``P`` marks a piece of a line longer than the maximum record
size (16 KiB, as kubelet and containerd use), which a reader joins with the
following pieces up to the next ``F``. The writer buffers incomplete lines per
stream, so arbitrary chunks (pipe reads on the host, agent messages from a VM)
give the same file. Written by each pod's agent link (vmcri.supervisor.link), for
both backends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MAX_RECORD = 16 * 1024
STREAMS = ("stdout", "stderr")


def rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction are trimmed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{frac:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


class CriLogWriter:
    """Appends CRI log records to ``path``; not thread-safe (one writer per container).

    Every record is one ``write(2)`` on an ``O_APPEND`` descriptor. Raises
    OSError from the file system (the caller decides whether to go on).
    """

    def __init__(
        self,
        path: str,
        clock: Callable[[], int] = time.time_ns,
        max_record: int = MAX_RECORD,
    ) -> None:
        if max_record < 1:
            raise ValueError("max_record must be positive")
        self.path = path
        self._clock = clock
        self._max = max_record
        self._pending: dict[str, bytearray] = {s: bytearray() for s in STREAMS}
        self._fd = -1
        self._open()

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _record(self, stream: str, tag: str, content: bytes) -> None:
        head = f"{rfc3339nano(self._clock())} {stream} {tag} ".encode()
        os.write(self._fd, head + content + b"\n")

    def write(self, stream: str, data: bytes) -> None:
        """Add output of ``stream``; whole lines are written, the rest is kept."""
        if stream not in self._pending:
            raise ValueError(f"unknown stream {stream!r}")
        buf = self._pending[stream]
        buf += data
        while True:
            newline = buf.find(b"\n", 0, self._max + 1)
            if newline >= 0:
                self._record(stream, "F", bytes(buf[:newline]))
                del buf[: newline + 1]
            elif len(buf) >= self._max:
                self._record(stream, "P", bytes(buf[: self._max]))
                del buf[: self._max]
            else:
                return

    def flush(self, stream: str | None = None) -> None:
        """Write what is buffered as a final line (the stream ended without a newline)."""
        self._write_pending((stream,) if stream else STREAMS, "F")

    def _write_pending(self, streams: tuple[str, ...], tag: str) -> None:
        for name in streams:
            buf = self._pending[name]
            if buf:
                self._record(name, tag, bytes(buf))
                buf.clear()

    def reopen(self) -> None:
        """Start writing to a fresh file at ``path`` (after kubelet rotated the old one)."""
        old = self._fd
        self._open()
        if old >= 0:
            os.close(old)

    def close(self, ended: bool = True) -> None:
        """Write incomplete lines and close the file. ``ended`` False: the streams go on
        through another writer (a new agent link appends), so an incomplete line is written
        as a ``P`` record, which readers join with the rest that follows."""
        if self._fd < 0:
            return
        try:
            self._write_pending(STREAMS, "F" if ended else "P")
        finally:
            os.close(self._fd)
            self._fd = -1
