"""One pod's agent connection, and the CRI log files its events feed.

The agent client reconnects by itself and replays unacknowledged events, so a
daemon restart loses no output: the new link reopens each running container's
log file (appending) and the guest sends what it buffered meanwhile.

The guest names containers in its events, and it is hostile: the link acts only on
events that name, by exact ID, a container of its own sandbox (``ContainerRef``).
Anything else (another pod's container, a prefix, an invented ID) is dropped and
counted, so the link holds at most one log writer per container of its pod and can
neither write into another pod's log nor record another pod's exit. The link's
``budget`` bounds the bytes of events the pod may have queued (vmcri.agent.budget).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from vmcri.agent import types
from vmcri.agent.budget import ByteBudget
from vmcri.agent.client import AgentClient
from vmcri.crilog import CriLogWriter
from vmcri.errors import AgentUnavailable, HypervisorError, VmcriError
from vmcri.ids import is_id
from vmcri.metrics import families as metrics

log = logging.getLogger(__name__)


class ContainerRef(NamedTuple):
    """What the link needs to know of a container record."""

    container_id: str
    sandbox_id: str
    log_path: str  # "" for none


ExitCallback = Callable[[str, types.ContainerExit], None]  # (sandbox id, exit)
ContainerLookup = Callable[[str], ContainerRef | None]  # a container ID -> its record, if any

CONNECT_ATTEMPT_S = 2.0
CALL_TIMEOUT_S = 60.0
CLOSE_DRAIN_S = 5.0  # for the events received before a close to reach the logs


class AgentLink:
    def __init__(
        self,
        sandbox_id: str,
        url: str,
        on_exit: ExitCallback,
        lookup: ContainerLookup,
        stall_hint: Callable[[], str] | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self._on_exit = on_exit
        self._lookup = lookup
        self._logs: dict[str, CriLogWriter] = {}
        # Held for every use of a writer, not only the dict: the event handler writes while
        # other threads reopen (ReopenContainerLog), close a container's log or the link
        self._logs_lock = threading.RLock()
        self._closed = False
        self._listeners: list[Callable[[types.AgentEvent], None]] = []
        self.refused = 0
        """Events dropped because they named no container of this pod."""
        self.budget = ByteBudget()
        self._client = AgentClient(
            url,
            on_event=self._event,
            connect_timeout=CONNECT_ATTEMPT_S,
            call_timeout=CALL_TIMEOUT_S,
            event_budget=self.budget,
            on_reconnect=metrics.agent_reconnected,
            stall_hint=stall_hint,
        )

    @property
    def client(self) -> AgentClient:
        """The connected client; raises AgentUnavailable when the agent cannot be reached."""
        if not self._client.connected:
            self._client.connect()
        return self._client

    def wait_ready(self, timeout_s: float, alive: Callable[[], bool]) -> types.AgentInfo:
        """Wait for a starting agent; raises HypervisorError if its home (the VM) dies first."""
        deadline = time.monotonic() + timeout_s
        last: VmcriError | None = None
        while time.monotonic() < deadline:
            if not alive():
                raise HypervisorError(f"sandbox {self.sandbox_id}: the VM stopped while booting")
            try:
                return self.client.ping()
            except (AgentUnavailable, OSError) as exc:
                last = exc if isinstance(exc, VmcriError) else AgentUnavailable(str(exc))
                time.sleep(0.2)
        raise AgentUnavailable(
            f"sandbox {self.sandbox_id}: the guest agent did not answer within {timeout_s:g}s"
            + (f" ({last.message})" if last else "")
        )

    # ---- events ---------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[types.AgentEvent], None]) -> None:
        """Also hand every event to ``listener`` (streaming sessions; it must not block long)."""
        with self._logs_lock:
            self._listeners = [*self._listeners, listener]

    def _event(self, event: types.AgentEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("sandbox %s: event listener failed", self.sandbox_id)
        if isinstance(event, types.OutputChunk):
            if not event.exec_id:
                self._write_log(event)
        elif isinstance(event, types.ContainerExit):
            if self._own(event.container_id) is None:
                return
            # The agent sends a container's last output before its exit; close (flush) the
            # log before the exit is recorded, so a client that saw the exit reads it all.
            self.close_log(event.container_id)
            self._on_exit(self.sandbox_id, event)

    def _own(self, container_id: str) -> ContainerRef | None:
        """The record of this pod's container with exactly this ID; None (counted) if none."""
        ref = None
        if is_id(container_id):  # a prefix is never a whole ID: no store look-up for it
            try:
                ref = self._lookup(container_id)
            except VmcriError:
                ref = None
        if (
            ref is not None
            and ref.container_id == container_id
            and ref.sandbox_id == self.sandbox_id
        ):
            return ref
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "sandbox %s: the guest named container %r, which is not one of this pod's "
                "(%d such events dropped)",
                self.sandbox_id,
                container_id[:80],
                self.refused,
            )
        return None

    def _writer(self, container_id: str) -> CriLogWriter | None:
        with self._logs_lock:
            writer = self._logs.get(container_id)
            if writer is None and not self._closed:
                ref = self._own(container_id)
                if ref is None or not ref.log_path:
                    return None
                writer = CriLogWriter(ref.log_path)
                self._logs[container_id] = writer
            return writer

    def _write_log(self, chunk: types.OutputChunk) -> None:
        try:
            with self._logs_lock:
                writer = self._writer(chunk.container_id)
                if writer is None:
                    return
                if chunk.eof:
                    writer.flush(chunk.stream)
                else:
                    writer.write(chunk.stream, chunk.data)
        except OSError as exc:
            log.error("container %s: cannot write its log: %s", chunk.container_id, exc)

    def open_log(self, container_id: str) -> None:
        """Create the container's log file now: kubelet may read it before any output."""
        self._writer(container_id)

    def reopen_log(self, container_id: str) -> None:
        with self._logs_lock:
            writer = self._writer(container_id)
            if writer is not None:
                writer.reopen()

    def close_log(self, container_id: str) -> None:
        with self._logs_lock:
            writer = self._logs.pop(container_id, None)
            if writer is not None:
                writer.close()

    def close(self) -> None:
        """Disconnect; the output already received still reaches the logs, then each log is
        closed, and nothing more is written through this link. The containers may go on: a
        line they had begun is left open (a partial record) for the next link to finish."""
        self._client.close(drain_s=CLOSE_DRAIN_S)
        with self._logs_lock:
            self._closed = True
            writers = list(self._logs.values())
            self._logs.clear()
            for writer in writers:
                writer.close(ended=False)
