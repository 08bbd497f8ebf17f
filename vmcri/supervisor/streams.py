"""Streaming sessions over a pod's agent: exec, attach and port-forward, for both backends.

Output and exits of sessions arrive as agent events on the link's dispatcher thread; a
:class:`StreamRouter` per pod hands them to the session they belong to:

* exec: OutputChunk/ExecExit with the session's exec id. Events can arrive before
  ExecStart answers with that id, so the router keeps a short, bounded backlog of exec
  events nobody has claimed yet, and a new session takes its own from it.
* attach: the container's own OutputChunks (empty exec id) and its ContainerExit.
* port-forward: PortForwardData by stream id; consumed bytes are acknowledged back.

Everything held here is charged to the pod's one byte budget (vmcri.agent.budget), which
the agent client's dispatch queue shares. When a session's client does not keep up and the
budget is spent, the dispatcher waits (which slows the guest: backpressure) for at most
``STALL_S``, then drops that session (logged; its client gets Unavailable) rather than
holding up the pod's other events. The backlog never waits: it keeps at most
``BACKLOG_BYTES`` and ``BACKLOG_EVENTS``, evicting its oldest entries. The guest is
untrusted: events for unknown ids are ignored, and nothing it sends grows without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from vmcri.agent import types
from vmcri.agent.budget import POD_EVENT_BUDGET, ByteBudget, event_cost
from vmcri.agent.client import AgentClient
from vmcri.errors import Unavailable, VmcriError
from vmcri.supervisor.api import StreamOutput
from vmcri.supervisor.link import AgentLink

log = logging.getLogger(__name__)

STALL_S = 5.0
BACKLOG_EVENTS = 512
BACKLOG_BYTES = POD_EVENT_BUDGET // 4
BACKLOG_AGE_S = 30.0
STDIN_CHUNK = 256 * 1024
ACK_EVERY = 64 * 1024
DEFAULT_TTY = (24, 80)

Deliver = Callable[[types.AgentEvent], bool]  # False: the session is gone, forget it


class _Sink:
    """A session's queue; every event in it holds its cost in the pod's budget.

    The dispatcher puts with a stall limit; the session gets. Closing empties the queue
    and gives the bytes back, so a dropped session holds nothing.
    """

    def __init__(self, budget: ByteBudget) -> None:
        self.queue: queue.SimpleQueue[types.AgentEvent | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self.overflowed = False
        self._budget = budget

    def put(self, event: types.AgentEvent) -> bool:
        if self.closed.is_set():
            return False
        if not self._budget.acquire(event_cost(event), STALL_S):
            log.warning("a streaming session did not keep up with its output: dropped")
            self.overflowed = True
            self.close()
            return False
        self.adopt(event)
        return True

    def adopt(self, event: types.AgentEvent) -> None:
        """Queue an event whose cost is already charged (moved from the backlog)."""
        self.queue.put(event)
        if self.closed.is_set():
            self._drain()  # close() ran meanwhile: give the bytes back

    def close(self) -> None:
        self.closed.set()
        self._drain()

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                event = self.queue.get_nowait()
                if event is not None:
                    self._budget.release(event_cost(event))
        self.queue.put(None)  # wakes a reader blocked in get()

    def get(self) -> types.AgentEvent | None:
        if self.closed.is_set() and self.queue.empty():
            return None
        event = self.queue.get()
        if event is not None:
            self._budget.release(event_cost(event))
        return event


class StreamRouter:
    """Routes one pod's agent events to its streaming sessions."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, budget: ByteBudget | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._execs: dict[tuple[str, str], _Sink] = {}
        self._attached: dict[str, list[_Sink]] = {}
        self._ports: dict[str, _Sink] = {}
        self._backlog: deque[tuple[float, types.AgentEvent]] = deque()
        self._clock = clock
        self.budget = budget or ByteBudget()
        self._backlog_budget = self.budget.share(BACKLOG_BYTES)

    def __call__(self, event: types.AgentEvent) -> None:
        sinks: list[_Sink] = []
        with self._lock:
            if isinstance(event, types.PortForwardData):
                sink = self._ports.get(event.stream_id)
                sinks = [sink] if sink else []
            elif isinstance(event, types.OutputChunk | types.ExecExit) and event.exec_id:
                sink = self._execs.get((event.container_id, event.exec_id))
                if sink is None:
                    self._keep(event)
                else:
                    sinks = [sink]
            elif isinstance(event, types.OutputChunk | types.ContainerExit):
                sinks = list(self._attached.get(event.container_id, ()))
        for sink in sinks:
            sink.put(event)

    def _keep(self, event: types.AgentEvent) -> None:
        """Add to the backlog, evicting the oldest entries to stay in bounds (never waits)."""
        cost = event_cost(event)
        if len(self._backlog) >= BACKLOG_EVENTS:
            self._forget(self._backlog.popleft()[1])
        while not self._backlog_budget.try_acquire(cost):
            if not self._backlog:
                return  # the pod's sessions and dispatch queue hold the budget: drop it
            self._forget(self._backlog.popleft()[1])
        self._backlog.append((self._clock(), event))

    def _forget(self, event: types.AgentEvent) -> None:
        self._backlog_budget.release(event_cost(event))

    def claim_exec(self, container_id: str, exec_id: str) -> _Sink:
        sink = _Sink(self.budget)
        with self._lock:
            now = self._clock()
            kept: deque[tuple[float, types.AgentEvent]] = deque()
            mine = []
            for stamp, event in self._backlog:
                assert isinstance(event, types.OutputChunk | types.ExecExit)
                if (event.container_id, event.exec_id) == (container_id, exec_id):
                    mine.append(event)
                elif now - stamp < BACKLOG_AGE_S:
                    kept.append((stamp, event))
                else:
                    self._forget(event)
            self._backlog = kept
            self._execs[(container_id, exec_id)] = sink
        for event in mine:
            # The charge moves from the backlog's share to the pod's whole budget, where
            # sink charges live; if another consumer took the room meanwhile, it is lost.
            self._backlog_budget.release(event_cost(event))
            if self.budget.try_acquire(event_cost(event)):
                sink.adopt(event)
        return sink

    def release_exec(self, container_id: str, exec_id: str) -> None:
        with self._lock:
            self._execs.pop((container_id, exec_id), None)

    def attach(self, container_id: str) -> _Sink:
        sink = _Sink(self.budget)
        with self._lock:
            self._attached.setdefault(container_id, []).append(sink)
        return sink

    def detach(self, container_id: str, sink: _Sink) -> None:
        with self._lock:
            sinks = self._attached.get(container_id, [])
            if sink in sinks:
                sinks.remove(sink)
            if not sinks:
                self._attached.pop(container_id, None)

    def add_port(self, stream_id: str) -> _Sink:
        sink = _Sink(self.budget)
        with self._lock:
            self._ports[stream_id] = sink
        return sink

    def remove_port(self, stream_id: str) -> None:
        with self._lock:
            self._ports.pop(stream_id, None)


class _AgentProcess:
    """What exec and attach sessions share: stdin, resize and output through the agent."""

    def __init__(
        self, client: AgentClient, router: StreamRouter, container_id: str, exec_id: str
    ) -> None:
        self._client = client
        self._router = router
        self._cid = container_id
        self._exec_id = exec_id
        self._sink = _Sink(router.budget)
        self._exit: int | None = None
        self._ended = threading.Event()

    def output(self) -> Iterator[StreamOutput]:
        while (event := self._sink.get()) is not None:
            if isinstance(event, types.OutputChunk):
                yield StreamOutput(event.stream, b"" if event.eof else event.data)
            elif isinstance(event, types.ExecExit | types.ContainerExit):
                self._exit = event.exit_code
                self._ended.set()
                return
        if self._sink.overflowed:
            raise Unavailable("the streaming client did not keep up with the output")

    def write_stdin(self, data: bytes) -> None:
        for start in range(0, len(data), STDIN_CHUNK):
            self._client.write_stdin(
                self._cid, data[start : start + STDIN_CHUNK], exec_id=self._exec_id
            )

    def close_stdin(self) -> None:
        with contextlib.suppress(VmcriError):
            self._client.write_stdin(self._cid, b"", exec_id=self._exec_id, close=True)

    def resize(self, width: int, height: int) -> None:
        with contextlib.suppress(VmcriError):
            self._client.resize(self._cid, height, width, exec_id=self._exec_id)


class AgentExecSession(_AgentProcess):
    def __init__(
        self,
        client: AgentClient,
        router: StreamRouter,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
    ) -> None:
        rows, cols = DEFAULT_TTY if tty else (0, 0)
        exec_id = client.exec_start(container_id, cmd, tty=tty, stdin=stdin, rows=rows, cols=cols)
        super().__init__(client, router, container_id, exec_id)
        self._sink = router.claim_exec(container_id, exec_id)

    def wait(self, timeout: float) -> int | None:
        self._ended.wait(timeout)
        return self._exit

    def close(self) -> None:
        if not self._ended.is_set():
            with contextlib.suppress(VmcriError):
                self._client.kill_exec(self._cid, self._exec_id)
        self._router.release_exec(self._cid, self._exec_id)
        self._sink.close()


class AgentAttachSession(_AgentProcess):
    def __init__(self, client: AgentClient, router: StreamRouter, container_id: str) -> None:
        super().__init__(client, router, container_id, "")
        self._sink = router.attach(container_id)

    def wait(self, timeout: float) -> int | None:
        return 0  # an attachment succeeded when the container's output ended, as in kubelet

    def close(self) -> None:
        self._router.detach(self._cid, self._sink)
        self._sink.close()


class AgentPortConnection:
    """Implements :class:`vmcri.handlers.base.PortConnection` through the agent."""

    def __init__(self, client: AgentClient, router: StreamRouter, port: int) -> None:
        self._client = client
        self._router = router
        try:
            self._id, _window = client.port_forward_open(port)
        except VmcriError as exc:
            raise Unavailable(f"port {port} in the pod VM: {exc.message}") from exc
        self._sink = router.add_port(self._id)
        self._unacked = 0
        self._eof = False

    def send(self, data: bytes) -> None:
        try:
            for start in range(0, len(data), STDIN_CHUNK):
                self._client.port_forward_write(self._id, data[start : start + STDIN_CHUNK])
        except VmcriError as exc:
            raise ConnectionError(exc.message) from exc

    def recv(self, max_bytes: int) -> bytes:
        if self._eof:
            return b""
        event = self._sink.get()
        if not isinstance(event, types.PortForwardData) or event.eof:
            self._eof = True
            if isinstance(event, types.PortForwardData) and event.error:
                raise ConnectionError(event.error)
            return b""
        self._unacked += len(event.data)
        if self._unacked >= ACK_EVERY:
            consumed, self._unacked = self._unacked, 0
            try:
                self._client.port_forward_write(self._id, consumed=consumed)
            except VmcriError as exc:
                raise ConnectionError(exc.message) from exc
        return event.data

    def close_write(self) -> None:
        with contextlib.suppress(VmcriError):
            self._client.port_forward_write(self._id, close_write=True)

    def close(self) -> None:
        self._router.remove_port(self._id)
        self._sink.close()
        with contextlib.suppress(VmcriError):
            self._client.port_forward_write(self._id, close=True)


_routers: weakref.WeakKeyDictionary[AgentLink, StreamRouter] = weakref.WeakKeyDictionary()
_routers_lock = threading.Lock()


def router_for(link: AgentLink) -> StreamRouter:
    """The link's router, made and subscribed to its events on first use."""
    with _routers_lock:
        router = _routers.get(link)
        if router is None:
            router = StreamRouter(budget=link.budget)
            link.add_listener(router)
            _routers[link] = router
        return router
