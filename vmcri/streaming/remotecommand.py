"""Exec and attach sessions: one process's stdio relayed to a client, whatever the transport.

The transport (SPDY streams or WebSocket channels, see ``command_spdy`` and
``command_websocket``) is a :class:`CommandChannels`; the process is the backend's
:class:`~vmcri.handlers.base.ProcessSession`. Threads::

    caller        output -> stdout/stderr until the process closed them, then the status
    stdin pump    client stdin -> process stdin; EOF closes the process's stdin
    resize pump   client terminal sizes -> process tty
    watcher       client gone (hang-up, reset, idle timeout) -> session.close()

A client that goes away ends the session: an exec'd process is killed, as containerd does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from vmcri.errors import VmcriError
from vmcri.streaming import kstatus
from vmcri.supervisor.api import ProcessSession

log = logging.getLogger(__name__)

EXIT_WAIT_S = 30.0  # after the output closed, how long the exit code may take
MAX_TERMINAL = 10000


class ClientGone(Exception):
    """The client hung up or reset the stream we were writing."""


@dataclass(frozen=True)
class Outcome:
    """How a session ended, for the error stream."""

    exit_code: int | None = 0  # None: unknown
    error: str = ""  # set: the session failed (not the process)

    def status_json(self, cmd: Sequence[str]) -> bytes:
        if self.error:
            return kstatus.internal_error(self.error)
        if self.exit_code:
            return kstatus.exit_failure(self.exit_code, cmd)
        return kstatus.success()

    def status_text(self, cmd: Sequence[str]) -> bytes:
        """What protocols before v4 put on the error stream: nothing, or a message."""
        if self.error:
            return self.error.encode()
        if self.exit_code:
            return (
                f"command terminated with non-zero exit code: exit code {self.exit_code}".encode()
            )
        return b""


class CommandChannels(Protocol):
    """The client's side of one exec/attach session."""

    def read_stdin(self) -> bytes:
        """Next stdin bytes from the client; b"" at its end (or when it sends none)."""
        ...

    def resizes(self) -> Iterator[tuple[int, int]]:
        """(width, height) as the client's terminal changes; ends with the session."""
        ...

    def write(self, stream: str, data: bytes) -> None:
        """Raises ClientGone."""
        ...

    def finish(self, outcome: Outcome) -> None:
        """Close the output streams, send the status, end the connection. Never raises."""
        ...

    def wait_gone(self) -> None:
        """Return once the client is gone (or finish() ran)."""
        ...


def serve_session(
    session: ProcessSession,
    channels: CommandChannels,
    *,
    stdin: bool,
    tty: bool,
    cmd: Sequence[str] = (),
) -> Outcome:
    """Relay until the process's output ends; send the status; close the session."""
    done = threading.Event()

    def watch() -> None:
        channels.wait_gone()
        if not done.is_set():
            session.close()

    threading.Thread(target=watch, name="stream-watch", daemon=True).start()
    if stdin:
        threading.Thread(
            target=_pump_stdin, args=(session, channels), name="stream-stdin", daemon=True
        ).start()
    if tty:
        threading.Thread(
            target=_pump_resize, args=(session, channels), name="stream-resize", daemon=True
        ).start()
    outcome: Outcome | None = None
    try:
        for chunk in session.output():
            if chunk.data:
                channels.write("stdout" if tty else chunk.stream, chunk.data)
        code = session.wait(EXIT_WAIT_S)
        outcome = Outcome(code) if code is not None else Outcome(error="exit code not known")
    except ClientGone:
        log.info("streaming client went away; ending its session")
    except VmcriError as exc:
        outcome = Outcome(error=exc.message)
    finally:
        done.set()
        session.close()
    if outcome is not None:
        channels.finish(outcome)
        return outcome
    channels.finish(Outcome(error="client went away"))
    return Outcome(error="client went away")


def _pump_stdin(session: ProcessSession, channels: CommandChannels) -> None:
    try:
        while data := channels.read_stdin():
            session.write_stdin(data)
    except VmcriError as exc:
        log.debug("stdin relay stopped: %s", exc.message)
        return
    with contextlib.suppress(VmcriError):
        session.close_stdin()


def _pump_resize(session: ProcessSession, channels: CommandChannels) -> None:
    for width, height in channels.resizes():
        if 0 < width <= MAX_TERMINAL and 0 < height <= MAX_TERMINAL:
            with contextlib.suppress(VmcriError):
                session.resize(width, height)


def parse_sizes(buffer: bytearray) -> Iterator[tuple[int, int]]:
    """Take whole ``{"Width":..,"Height":..}`` objects off the front of ``buffer``.

    Malformed input is dropped: a client cannot hurt the session by sending it.
    """
    decoder = json.JSONDecoder()
    while True:
        try:
            text = buffer.decode("ascii")
        except UnicodeDecodeError:
            buffer.clear()
            return
        stripped = text.lstrip()
        if not stripped:
            buffer.clear()
            return
        try:
            value, end = decoder.raw_decode(stripped)
        except ValueError:
            if len(buffer) > 4096:
                buffer.clear()
            return
        del buffer[: len(text) - len(stripped) + end]
        if isinstance(value, dict):
            width, height = value.get("Width"), value.get("Height")
            if isinstance(width, int) and isinstance(height, int):
                yield width, height
