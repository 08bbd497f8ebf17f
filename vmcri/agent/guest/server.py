"""The agent's server: one host connection at a time, requests in threads, events replayed.

Threads::

    main (serve)    accepts host connections; a new one replaces the current session
    session reader  cuts frames, answers Hello, hands each Request to a worker thread
    session writer  writes responses, then events newer than the host's cursor
    workers         one per request (bounded): runc calls and long waits do not block others

A connection starts unsynchronised: the reader skips bytes until a Hello (the stream may hold
the tail of the previous host's frame). After a Hello, a malformed frame drops the reader back
to that state instead of ending the agent: the host is gone or confused, the guest carries on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from google.protobuf.message import DecodeError

from vmcri import __version__
from vmcri.agent import PROTOCOL_VERSION
from vmcri.agent.framing import FrameKind, FrameReader, encode_frame
from vmcri.agent.guest.containers import ContainerManager
from vmcri.agent.guest.events import EventLog
from vmcri.agent.guest.execs import ExecManager
from vmcri.agent.guest.hotplug import Hotplug
from vmcri.agent.guest.portforward import PortForwards
from vmcri.agent.guest.sandbox import Sandbox
from vmcri.agent.guest.volumes import GuestVolumes
from vmcri.agent.guest.warm_up import warm_up
from vmcri.agent.transport import GuestConnection, Listener
from vmcri.api import agent_pb2
from vmcri.errors import InvalidArgument, ProtocolError, Unimplemented, VmcriError

IMAGE_VERSION_FILE = "/etc/vmcri/version"


def _agent_version() -> str:
    """``<vmcri version>+<first 12 hex of the guest image version>`` when known.

    The host compares the image part with the image it booted, so a VM started
    from a stale or foreign image is refused instead of half-working.
    """
    try:
        with open(IMAGE_VERSION_FILE) as f:
            image = f.read().strip()[:12]
    except OSError:
        return __version__
    return f"{__version__}+{image}" if image.isalnum() else __version__


AGENT_VERSION = _agent_version()

log = logging.getLogger("vmcri.agent")

MAX_WORKERS = 64
WRITE_BATCH = 256 * 1024


class Agent:
    """Dispatches one Request to the guest's managers and builds its Response."""

    def __init__(
        self,
        *,
        containers: ContainerManager,
        execs: ExecManager,
        sandbox: Sandbox,
        events: EventLog,
        shutdown: Callable[[], None],
        hotplug: Hotplug | None = None,
        volumes: GuestVolumes | None = None,
    ) -> None:
        self.containers = containers
        self.execs = execs
        self.sandbox = sandbox
        self.events = events
        self.hotplug = hotplug or Hotplug(enabled=False)
        self.volumes = volumes
        self._shutdown = shutdown
        self._started = time.monotonic_ns()
        self.ports = PortForwards(events)

    def handle(self, request: agent_pb2.Request) -> agent_pb2.Response:
        """Never raises: every failure becomes Response.error with its gRPC code name."""
        try:
            return self._dispatch(request)
        except VmcriError as exc:
            return _error(exc.code, exc.message)
        except Exception as exc:
            log.exception("request %s failed", request.WhichOneof("call"))
            return _error("INTERNAL", f"{type(exc).__name__}: {exc}")

    def _dispatch(self, request: agent_pb2.Request) -> agent_pb2.Response:
        call = request.WhichOneof("call")
        c = self.containers
        if call == "ping":
            return agent_pb2.Response(
                ping=agent_pb2.PingResponse(
                    agent_version=AGENT_VERSION,
                    protocol_version=PROTOCOL_VERSION,
                    uptime_ns=time.monotonic_ns() - self._started,
                    containers=len(c.all()),
                    events_dropped=self.events.dropped,
                )
            )
        if call == "setup_sandbox":
            return agent_pb2.Response(setup_sandbox=self.sandbox.setup(request.setup_sandbox))
        if call == "mount_shares":
            self.sandbox.mount_shares(request.mount_shares)
            return agent_pb2.Response(empty=agent_pb2.Empty())
        if call == "sync_volume":
            if self.volumes is None:
                raise Unimplemented("sync_volume: this agent keeps no volumes")
            return agent_pb2.Response(sync_volume=self.volumes.sync(request.sync_volume))
        if call == "create_container":
            return _state(c.create(request.create_container).to_proto())
        if call == "start_container":
            return _state(c.start(request.start_container.container_id).to_proto())
        if call == "signal_container":
            msg = request.signal_container
            c.signal(msg.container_id, msg.signal)
            return _empty()
        if call == "wait_container":
            return _state(c.wait(request.wait_container.container_id).to_proto())
        if call == "container_status":
            return _state(c.get(request.container_status.container_id).to_proto())
        if call == "list_containers":
            states = [container.to_proto() for container in c.all()]
            return agent_pb2.Response(
                list_containers=agent_pb2.ListContainersResponse(containers=states)
            )
        if call == "remove_container":
            c.remove(request.remove_container.container_id)
            return _empty()
        if call == "exec_sync":
            return agent_pb2.Response(exec_sync=self.execs.exec_sync(request.exec_sync))
        if call == "exec_start":
            exec_id = self.execs.start(request.exec_start)
            return agent_pb2.Response(exec_start=agent_pb2.ExecStartResponse(exec_id=exec_id))
        if call == "write_stdin":
            self.execs.write_stdin(request.write_stdin)
            return _empty()
        if call == "resize":
            self.execs.resize(request.resize)
            return _empty()
        if call == "stats":
            return agent_pb2.Response(stats=self._stats(list(request.stats.container_ids)))
        if call == "update_resources":
            update = request.update_resources
            c.update(update.container_id, update.resources_json)
            return _empty()
        if call == "shutdown":
            threading.Timer(0.2, self._shutdown).start()
            return _empty()
        if call == "warm_up":
            warm_up(c.runc, c.reaper, c.mounter, c.paths.scratch)
            return _empty()
        if call == "kill_exec":
            self.execs.kill(request.kill_exec)
            return _empty()
        if call == "port_forward_open":
            return agent_pb2.Response(port_forward_open=self.ports.open(request.port_forward_open))
        if call == "port_forward_write":
            self.ports.write(request.port_forward_write)
            return _empty()
        if call == "online_resources":
            return agent_pb2.Response(
                online_resources=self.hotplug.online(request.online_resources)
            )
        raise Unimplemented(f"unknown call {call!r}")

    def _stats(self, ids: list[str]) -> agent_pb2.StatsResponse:
        from vmcri.agent.guest.cgroups import read_meminfo

        meminfo = read_meminfo()
        return agent_pb2.StatsResponse(
            containers=self.containers.stats(ids),
            vm_memory=agent_pb2.VmMemory(
                total_bytes=meminfo.get("MemTotal", 0),
                free_bytes=meminfo.get("MemFree", 0),
                available_bytes=meminfo.get("MemAvailable", 0),
            ),
        )


def _error(code: str, message: str) -> agent_pb2.Response:
    return agent_pb2.Response(error=agent_pb2.Error(code=code, message=message[:4000]))


def _state(state: agent_pb2.ContainerState) -> agent_pb2.Response:
    return agent_pb2.Response(container=state)


def _empty() -> agent_pb2.Response:
    return agent_pb2.Response(empty=agent_pb2.Empty())


class Session:
    """One host connection."""

    def __init__(self, conn: GuestConnection, agent: Agent, workers: threading.Semaphore) -> None:
        self._conn = conn
        self._agent = agent
        self._events = agent.events
        self._cond = agent.events.cond
        self._workers = workers
        self._outbox: deque[bytes] = deque()
        self._synced = False
        self._cursor = 0
        self._generation = 0
        self.closed = threading.Event()

    def run(self) -> None:
        writer = threading.Thread(target=self._write_loop, name="agent-writer", daemon=True)
        writer.start()
        reader = FrameReader()
        try:
            while not self.closed.is_set():
                data = self._conn.read(1.0)
                if data is None:
                    continue
                if not data:
                    log.info("host disconnected")
                    break
                reader.feed(data)
                self._consume(reader)
        finally:
            self.close()
            writer.join(5.0)

    def close(self) -> None:
        with self._cond:
            self.closed.set()
            self._cond.notify_all()
        self._conn.close()

    def _consume(self, reader: FrameReader) -> None:
        while True:
            if not self._synced:
                frame = reader.scan_for(FrameKind.HELLO, _is_hello)
                if frame is None:
                    return
            else:
                try:
                    frame = reader.next_frame()
                except ProtocolError as exc:
                    log.warning("bad frame from host (%s): resynchronising", exc)
                    reader.reset()
                    self._synced = False
                    return
                if frame is None:
                    return
            if frame.kind == FrameKind.HELLO:
                self._hello(agent_pb2.Hello.FromString(frame.body))
            elif frame.kind == FrameKind.ACK:
                with contextlib.suppress(DecodeError):
                    self._events.ack(agent_pb2.Ack.FromString(frame.body).seq)
            elif frame.kind == FrameKind.REQUEST:
                self._request(frame.frame_id, frame.body)
            else:
                log.warning("ignoring a %s frame from the host", frame.kind.name)

    def _hello(self, hello: agent_pb2.Hello) -> None:
        self._events.ack(hello.ack_seq)
        with self._cond:
            last = self._events.last_seq
            ack = agent_pb2.HelloAck(
                nonce=hello.nonce,
                protocol_version=PROTOCOL_VERSION,
                agent_version=AGENT_VERSION,
                last_seq=last,
            )
            self._outbox.clear()
            self._outbox.append(encode_frame(FrameKind.HELLO_ACK, 0, ack.SerializeToString()))
            # A host that knows more events than exist talks to a restarted agent: replay all.
            self._cursor = hello.ack_seq if hello.ack_seq <= last else 0
            self._generation += 1
            self._synced = True
            self._cond.notify_all()
        log.info("host connected (ack_seq=%d, last_seq=%d)", hello.ack_seq, last)

    def _request(self, request_id: int, body: bytes) -> None:
        try:
            request = agent_pb2.Request.FromString(body)
        except DecodeError as exc:
            self._respond(request_id, _error("INVALID_ARGUMENT", f"undecodable request: {exc}"))
            return
        if not self._workers.acquire(blocking=False):
            self._respond(request_id, _error("RESOURCE_EXHAUSTED", "too many calls in flight"))
            return

        def work() -> None:
            try:
                self._respond(request_id, self._agent.handle(request))
            finally:
                self._workers.release()

        threading.Thread(target=work, name=f"call-{request_id}", daemon=True).start()

    def _respond(self, request_id: int, response: agent_pb2.Response) -> None:
        body = response.SerializeToString()
        try:
            frame = encode_frame(FrameKind.RESPONSE, request_id, body)
        except InvalidArgument as exc:
            frame = encode_frame(
                FrameKind.RESPONSE,
                request_id,
                _error("RESOURCE_EXHAUSTED", f"response too large: {exc}").SerializeToString(),
            )
        with self._cond:
            if not self.closed.is_set():
                self._outbox.append(frame)
                self._cond.notify_all()

    def _write_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while (
                        not self.closed.is_set()
                        and not self._outbox
                        and not (self._synced and self._events.last_seq > self._cursor)
                    ):
                        self._cond.wait(1.0)
                    if self.closed.is_set():
                        return
                    frames = list(self._outbox)
                    self._outbox.clear()
                    generation = self._generation
                    synced = self._synced
                    upto = self._events.last_seq
                    events = self._events.since(self._cursor) if synced else []
                batch = bytearray(b"".join(frames))
                for seq, body in events:
                    batch += encode_frame(FrameKind.EVENT, 0, body)
                    if len(batch) >= WRITE_BATCH:
                        upto = seq
                        break
                if batch:
                    self._conn.write(bytes(batch))
                if synced:
                    # Events dropped from the log (output over budget) are skipped too.
                    with self._cond:
                        if generation == self._generation:
                            self._cursor = max(self._cursor, upto)
        except (ConnectionError, OSError) as exc:
            log.info("host connection lost while writing: %s", exc)
            self.close()


def _is_hello(frame: object) -> bool:
    try:
        agent_pb2.Hello.FromString(frame.body)  # type: ignore[attr-defined]
    except DecodeError:
        return False
    return True


def serve(listener: Listener, agent: Agent, stop: threading.Event) -> None:
    """Serve host connections until ``stop`` is set; never exits because a host left."""
    workers = threading.Semaphore(MAX_WORKERS)
    current: Session | None = None
    while not stop.is_set():
        try:
            conn = listener.accept(1.0)
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            time.sleep(0.5)
            continue
        if conn is None:
            continue
        if current is not None:
            current.close()
        current = Session(conn, agent, workers)
        threading.Thread(target=current.run, name="agent-session", daemon=True).start()
    if current is not None:
        current.close()
    listener.close()
