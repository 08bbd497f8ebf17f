"""A hostile guest agent, played by the test over a real unix socket.

The guest owns its VM and everything its agent sends: it may stop reading, name
containers of other pods, invent IDs by the thousand, or flood output. The host must
bound each of these to the guest's own pod: calls fail within their deadline, other
pods' exits are still recorded, other pods' logs stay untouched, and the pod's events
stay within its byte budget (vmcri/agent/budget.py) while the daemon keeps serving.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.hypervisor import FakeHypervisor
from tests.support.runtime import NoImages
from tests.support.vm_backend import make_backend
from tests.support.wait import wait_until
from vmcri.agent import PROTOCOL_VERSION
from vmcri.agent.budget import POD_EVENT_BUDGET
from vmcri.agent.client import AgentClient
from vmcri.agent.convert import MAX_OUTPUT_CHUNK
from vmcri.agent.framing import MAX_BODY, Frame, FrameKind, FrameReader, encode_frame
from vmcri.api import agent_pb2
from vmcri.config import Config
from vmcri.errors import AgentUnavailable, VmcriError
from vmcri.handlers.registry import Handler, HandlerRegistry
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, Metadata, PodConfig
from vmcri.runtime.checkpoints.service import CheckpointService
from vmcri.runtime.containers import ContainerService
from vmcri.runtime.context import Services
from vmcri.runtime.events import EventBus
from vmcri.runtime.exits import ContainerExits
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState
from vmcri.store.store import Store
from vmcri.supervisor import streams
from vmcri.supervisor.api import ContainerExit, ContainerLiveness

Answer = Callable[[agent_pb2.Request], "agent_pb2.Response | None"]


class HostileGuest:
    """The guest end of one agent connection; the test decides every byte it sends."""

    def __init__(self, path: Path) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(4)
        self._listener.settimeout(10)
        self.url = f"unix://{path}"
        self._conn: socket.socket | None = None
        self._reader = FrameReader()
        self._send_lock = threading.Lock()
        self._seq = 0
        self._connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        conn, _ = self._listener.accept()
        conn.settimeout(30)
        self._conn = conn
        hello = agent_pb2.Hello.FromString(self.read_frame().body)
        ack = agent_pb2.HelloAck(
            nonce=hello.nonce, protocol_version=PROTOCOL_VERSION, agent_version="hostile"
        )
        conn.sendall(encode_frame(FrameKind.HELLO_ACK, 0, ack.SerializeToString()))
        self._connected.set()

    def wait_connected(self) -> None:
        assert self._connected.wait(10), "the host never completed the handshake"

    def read_frame(self) -> Frame:
        assert self._conn is not None
        while (frame := self._reader.next_frame()) is None:
            data = self._conn.recv(65536)
            if not data:
                raise ConnectionError("host closed")
            self._reader.feed(data)
        return frame

    def serve(self, answer: Answer | None = None) -> None:
        """Read from now on: drain Acks, answer every call (a ping with a PingResponse);
        ``answer`` decides first (None from it: the call is never answered)."""

        def loop() -> None:
            try:
                while True:
                    frame = self.read_frame()
                    if frame.kind != FrameKind.REQUEST:
                        continue
                    request = agent_pb2.Request.FromString(frame.body)
                    if answer is not None:
                        response = answer(request)
                        if response is None:
                            continue
                    elif request.WhichOneof("call") == "ping":
                        ping = agent_pb2.PingResponse(protocol_version=PROTOCOL_VERSION)
                        response = agent_pb2.Response(ping=ping)
                    else:
                        response = agent_pb2.Response(empty={})
                    self._send(FrameKind.RESPONSE, frame.frame_id, response.SerializeToString())
            except (OSError, ConnectionError):
                return

        threading.Thread(target=loop, daemon=True).start()

    def _send(self, kind: FrameKind, frame_id: int, body: bytes) -> None:
        assert self._conn is not None
        with self._send_lock:
            self._conn.sendall(encode_frame(kind, frame_id, body))

    def event(self, **kind: Any) -> None:
        self._seq += 1
        self._send(FrameKind.EVENT, 0, agent_pb2.Event(seq=self._seq, **kind).SerializeToString())

    def output(self, container_id: str, data: bytes, exec_id: str = "") -> None:
        self.event(
            output=agent_pb2.OutputChunk(
                container_id=container_id,
                exec_id=exec_id,
                stream=agent_pb2.OUTPUT_STREAM_STDOUT,
                data=data,
            )
        )

    def exited(self, container_id: str) -> None:
        self.event(container_exited=agent_pb2.ContainerExited(container_id=container_id))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


def _sandbox(store: Store, handler: str, agent_url: str = "") -> SandboxRecord:
    config = PodConfig(metadata=Metadata(name=f"pod-{handler}", uid=new_id(), namespace="n"))
    runtime = {"agent_url": agent_url} if agent_url else {}
    record = store.sandboxes.add(
        SandboxRecord(id=new_id(), handler=handler, backend=handler, config=config, runtime=runtime)
    )
    return store.sandboxes.set_fields(record.id, state=SandboxState.READY)


def _container(store: Store, sandbox: SandboxRecord, log_path: str = "") -> ContainerRecord:
    record = store.containers.add(
        ContainerRecord(
            id=new_id(),
            sandbox_id=sandbox.id,
            config=ContainerConfig(metadata=Metadata(name=f"c-{new_id()[:8]}"), image="busybox"),
            image_id="sha256:1",
            image_name="busybox",
            log_path=log_path,
        )
    )
    return store.containers.set_fields(record.id, state=ContainerState.RUNNING)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- (a) a guest that stops reading ------------------------------------------------------

SEND_TIMEOUT_S = 1.0


class HungPodBackend:
    """A VM pod's liveness check, through the agent client: its supervisor asks the agent."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client
        self.finished_at = 0.0
        self.error: BaseException | None = None

    @property
    def supervisor(self) -> HungPodBackend:
        return self

    def liveness(self, sandbox: SandboxRecord, container: ContainerRecord) -> Any:
        try:
            self._client.container_status(container.id)
        except VmcriError as exc:
            self.error = exc
            return ContainerLiveness(running=True)
        finally:
            self.finished_at = time.monotonic()
        return ContainerLiveness(running=True)


class ExitedPodBackend:
    """Another pod on the node, whose container has just exited: its supervisor sends the
    exit up when checked, as the real one does for a pod whose agent is gone."""

    def __init__(self, records: ContainerExits) -> None:
        self._records = records
        self.checked_at = 0.0

    @property
    def supervisor(self) -> ExitedPodBackend:
        return self

    def liveness(self, sandbox: SandboxRecord, container: ContainerRecord) -> Any:
        self.checked_at = time.monotonic()
        self._records.container_exited(container.id, ContainerExit(3, time.time_ns(), "", ""))
        return ContainerLiveness(running=False)


def test_a_guest_that_stops_reading_fails_calls_in_time_and_stalls_no_other_pod(
    short_tmp: Path,
) -> None:
    guest = HostileGuest(short_tmp / "a.sock")
    client = AgentClient(
        guest.url, reconnect=False, connect_timeout=2.0, send_timeout=SEND_TIMEOUT_S
    )
    client.connect()
    guest.wait_connected()  # ... and from now on the guest reads nothing

    store = Store(short_tmp / "root")
    events = EventBus()
    exits = ContainerExits(store, events, time.time_ns)
    hung, healthy = HungPodBackend(client), ExitedPodBackend(exits)
    registry = HandlerRegistry(
        {
            "vm": Handler("vm", "vm", hung),  # type: ignore[arg-type]
            "runc": Handler("runc", "runc", healthy),  # type: ignore[arg-type]
        },
        "runc",
    )
    services = Services(
        config=Config(),
        store=store,
        events=events,
        exits=exits,
        images=NoImages(),
        handlers=registry,
    )
    hostile_pod, other_pod = _sandbox(store, "vm"), _sandbox(store, "runc")
    _container(store, hostile_pod)  # listed first: the reaper meets the hung pod first
    other = _container(store, other_pod)

    # An attach session pushes stdin that the guest never reads: the frame cannot leave.
    stdin_error: list[BaseException] = []
    stdin_took: list[float] = []

    def push_stdin() -> None:
        started = time.monotonic()
        try:
            client.write_stdin(other.id, b"x" * (MAX_BODY - 4096))
        except BaseException as exc:
            stdin_error.append(exc)
        stdin_took.append(time.monotonic() - started)

    threading.Thread(target=push_stdin, daemon=True).start()
    reaper = ContainerService(services)
    threading.Thread(target=reaper.refresh_all, daemon=True).start()

    assert wait_until(lambda: store.containers.get(other.id).state is ContainerState.EXITED, 3.0), (
        "the reaper recorded no exit of the other pod while the hostile pod's guest hangs"
    )
    assert store.containers.get(other.id).exit_code == 3
    assert hung.finished_at == 0.0 or healthy.checked_at < hung.finished_at, (
        "the other pod's check had to wait for the hung pod's check to end"
    )
    assert wait_until(lambda: bool(stdin_took), 2 * SEND_TIMEOUT_S + 1), (
        "the stuck send never ended"
    )
    assert stdin_took[0] < SEND_TIMEOUT_S + 1.0
    assert isinstance(stdin_error[0], AgentUnavailable)
    assert "did not take the frame" in str(stdin_error[0])
    assert not client.connected
    # The hung pod's own check is bounded too: it ends with AgentUnavailable.
    assert wait_until(lambda: hung.finished_at > 0, 2 * SEND_TIMEOUT_S + 1)
    assert isinstance(hung.error, AgentUnavailable)
    client.close()
    guest.close()


# ---- (b) a guest that names other pods' containers ---------------------------------------


def test_a_guest_cannot_write_another_pods_log_or_open_writers_for_ids_it_invents(
    short_tmp: Path,
) -> None:
    backend, store = make_backend(short_tmp, FakeHypervisor())
    logs = short_tmp / "logs"
    logs.mkdir()
    guest = HostileGuest(short_tmp / "b.sock")
    hostile_pod, victim_pod = _sandbox(store, "vm", guest.url), _sandbox(store, "vm")
    own = _container(store, hostile_pod, str(logs / "own.log"))
    victim = _container(store, victim_pod, str(logs / "victim.log"))
    Path(victim.log_path).write_bytes(b"kubelet's own line\n")
    link = backend.supervisor.link(hostile_pod)
    assert link.client.connected
    guest.wait_connected()
    guest.serve()
    fds = _open_fds()

    guest.output(victim.id, b"forged by exact id\n")
    guest.output(victim.id[:12], b"forged by prefix\n")
    guest.output(own.id[:12], b"own container, but by prefix\n")
    guest.exited(victim.id)
    for i in range(3000):
        guest.output(new_id() if i % 2 else f"invented-{i}", b"junk\n")
    guest.output(own.id, b"own line\n")

    own_log = Path(own.log_path)
    assert wait_until(lambda: own_log.exists() and b"own line" in own_log.read_bytes(), 10.0)
    assert Path(victim.log_path).read_bytes() == b"kubelet's own line\n"
    assert b"by prefix" not in own_log.read_bytes()
    victim_exit = SandboxLayout(
        short_tmp / "state" / "backends" / "vm" / victim_pod.id,
        short_tmp / "root" / "backends" / "vm" / victim_pod.id,
    )
    assert not victim_exit.exit_file(victim.id).exists()
    assert store.containers.get(victim.id).state is ContainerState.RUNNING
    assert set(link._logs) == {own.id}
    assert _open_fds() - fds <= 1  # the own container's log, nothing else
    assert link.refused == 3004
    backend.supervisor.drop_link(hostile_pod.id)
    guest.close()


# ---- (c) a guest that floods ---------------------------------------------------------------

FLOOD_EXEC_CHUNKS = 120  # 30 MiB of exec output nobody claims
FLOOD_ATTACH_CHUNKS = 24  # 6 MiB of container output for a session that never reads
SLACK = 2 << 20  # the frame reader's buffer (one frame) and the log writer's line
PEAK_SLACK = 8 << 20


def test_a_flooding_guest_is_held_to_the_pods_byte_budget_and_the_pod_keeps_serving(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "STALL_S", 0.2)
    backend, store = make_backend(short_tmp, FakeHypervisor())
    guest = HostileGuest(short_tmp / "c.sock")
    pod = _sandbox(store, "vm", guest.url)
    own = _container(store, pod, str(short_tmp / "own.log"))
    link = backend.supervisor.link(pod)
    client = link.client
    guest.wait_connected()
    guest.serve()
    router = streams.router_for(link)
    idle = router.attach(own.id)  # a streaming client that never reads

    chunk = b"x" * MAX_OUTPUT_CHUNK
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(FLOOD_EXEC_CHUNKS):
            guest.output(own.id, chunk, exec_id=f"exec-{i}")
            if i < FLOOD_ATTACH_CHUNKS:
                guest.output(own.id, chunk[:-1] + b"\n")
        guest.output(own.id, b"done\n")
        own_log = Path(own.log_path)
        assert wait_until(lambda: own_log.exists() and b"done" in own_log.read_bytes(), 20.0)
        held, peak = (n - base for n in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()

    assert held < POD_EVENT_BUDGET + SLACK, f"the host holds {held} bytes of the flood"
    # The peak adds transient copies of a few frames, on both ends of the socket.
    assert peak < POD_EVENT_BUDGET + PEAK_SLACK, f"the host held {peak} bytes at once"
    assert link.budget.peak <= POD_EVENT_BUDGET
    assert idle.overflowed and idle.closed.is_set()  # the session that did not read: dropped
    assert client.ping(timeout=5.0).protocol_version == PROTOCOL_VERSION
    backend.supervisor.drop_link(pod.id)
    guest.close()


# ---- (d) a guest that freezes, or lies in its stats ----------------------------------------

LIE = (1 << 63) - 1
HOST_MEMORY = 16 << 30


def _stats_answer(figure: Callable[[int], int]) -> Answer:
    """Stats of every container asked for, each figure ``figure(i)``; every other call: empty."""

    def answer(request: agent_pb2.Request) -> agent_pb2.Response:
        if request.WhichOneof("call") != "stats":
            return agent_pb2.Response(empty={})
        n = figure(1)
        items = [
            agent_pb2.ContainerStats(
                container_id=cid,
                cpu_usage_ns=n,
                memory_usage_bytes=n,
                memory_working_set_bytes=n,
                memory_rss_bytes=n,
                pids=3,
                timestamp_ns=min(n, time.time_ns()),
                counters=agent_pb2.UsageCounters(
                    memory_cache_bytes=n,
                    threads=n,
                    io=[agent_pb2.DeviceIo(device="vda", read_bytes=n, write_bytes=n)],
                ),
            )
            for cid in request.stats.container_ids
        ]
        return agent_pb2.Response(stats=agent_pb2.StatsResponse(containers=items))

    return answer


def test_a_frozen_or_lying_guest_leaves_other_pods_stats_prompt_and_exact(
    short_tmp: Path,
) -> None:
    from vmcri.api import api_pb2 as pb
    from vmcri.cri.rpc_common import RuntimeServices
    from vmcri.cri.runtime_service import RuntimeServicer
    from vmcri.runtime.info import RuntimeInfo
    from vmcri.runtime.pods import PodService
    from vmcri.streaming.service import StreamingService
    from vmcri.supervisor.containers import STATS_CALL_TIMEOUT_S

    backend, store = make_backend(short_tmp, FakeHypervisor())
    guests = {name: HostileGuest(short_tmp / f"{name}.sock") for name in ("frz", "liar", "ok")}
    pods = {name: _sandbox(store, "vm", g.url) for name, g in guests.items()}
    containers = {name: [_container(store, pod) for _ in range(3)] for name, pod in pods.items()}
    for name, guest in guests.items():
        assert backend.supervisor.link(pods[name]).client.connected
        guest.wait_connected()
    guests["frz"].serve(lambda request: None)  # reads every call, answers none
    guests["liar"].serve(_stats_answer(lambda _: LIE))
    guests["ok"].serve(_stats_answer(lambda _: 4096))

    events = EventBus()
    services = Services(
        config=Config(),
        store=store,
        events=events,
        exits=ContainerExits(store, events, time.time_ns),
        images=NoImages(),
        handlers=HandlerRegistry({"vm": Handler("vm", "vm", backend)}, "vm"),
        memory_bound=HOST_MEMORY,
    )
    container_service = ContainerService(services)
    pod_service = PodService(services, container_service)
    servicer = RuntimeServicer(
        RuntimeServices(
            pods=pod_service,
            containers=container_service,
            info=RuntimeInfo(services),
            events=services.events,
            streaming=StreamingService(services, container_service, services.config.streaming),
            checkpoints=CheckpointService(services, pod_service, container_service),
        )
    )
    ctx: Any = None
    ok = pods["ok"].id
    started = time.monotonic()
    listed = servicer.ListContainerStats(pb.ListContainerStatsRequest(), ctx).stats
    took = time.monotonic() - started
    # One bounded wait for the frozen pod, not one per container (nor 60 s each).
    assert took < STATS_CALL_TIMEOUT_S + 3, f"ListContainerStats took {took:.1f}s"
    by_id = {s.attributes.id: s for s in listed}
    assert len(by_id) == 9
    for c in containers["ok"]:
        assert by_id[c.id].memory.working_set_bytes.value == 4096
    for c in containers["frz"]:
        assert not by_id[c.id].HasField("memory")  # reported, without numbers
    for c in containers["liar"]:
        assert by_id[c.id].memory.usage_bytes.value == HOST_MEMORY

    started = time.monotonic()
    pod_stats = servicer.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), ctx).stats
    assert time.monotonic() - started < STATS_CALL_TIMEOUT_S + 3
    by_pod = {s.attributes.id: s.linux for s in pod_stats}
    assert by_pod[ok].memory.working_set_bytes.value == 3 * 4096
    assert by_pod[ok].cpu.usage_core_nano_seconds.value == 3 * 4096
    assert by_pod[pods["liar"].id].cpu.usage_core_nano_seconds.value == (1 << 64) - 1
    assert not by_pod[pods["frz"].id].HasField("cpu")

    started = time.monotonic()
    metrics = servicer.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), ctx).pod_metrics
    assert time.monotonic() - started < STATS_CALL_TIMEOUT_S + 3
    by_pod_m = {m.pod_sandbox_id: m for m in metrics}
    ws = [m for m in by_pod_m[ok].metrics if m.name == "container_memory_working_set_bytes"]
    assert [m.value.value for m in ws] == [3 * 4096]
    assert not by_pod_m[pods["frz"].id].container_metrics
    reads = [
        m for m in by_pod_m[pods["liar"].id].metrics if m.name == "container_fs_reads_bytes_total"
    ]
    assert [m.value.value for m in reads] == [(1 << 64) - 1]

    # Asked for itself, the healthy pod answers at once while the frozen one still hangs.
    started = time.monotonic()
    request = pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=ok))
    assert len(servicer.ListContainerStats(request, ctx).stats) == 3
    assert time.monotonic() - started < 1.0
    for pod in pods.values():
        backend.supervisor.drop_link(pod.id)
    for guest in guests.values():
        guest.close()
