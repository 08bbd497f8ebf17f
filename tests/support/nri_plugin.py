"""An NRI plugin in Python, speaking the protocol from the plugin's side, for tests.

Written apart from ``vmcri.nri`` (its own framing, from NRI's and ttrpc's wire format),
so that a mistake in vmcri's framing is not mirrored here and hidden. It registers,
subscribes, records every event it is sent, adjusts containers, and misbehaves on
request: refuses an event, never answers, answers garbage, disconnects mid-call, or stops
reading its socket altogether.

    plugin = ScriptedPlugin("recorder", "10", Behaviour(adjust=...))
    plugin.connect("/run/.../nri.sock")      # RegisterPlugin; then vmcri configures it
    wait_for(lambda: plugin.synchronized, 10, "Synchronize")
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from vmcri.api import nri_pb2, ttrpc_pb2

MUX = struct.Struct(">II")
TTRPC = struct.Struct(">IIBB")
PLUGIN_CONN = 1
RUNTIME_CONN = 2

Adjuster = Callable[[nri_pb2.CreateContainerRequest], nri_pb2.CreateContainerResponse]


@dataclass
class Behaviour:
    """What the plugin does. Keys of the sets are method names ("CreateContainer") or,
    for StateChange, event names ("RUN_POD_SANDBOX")."""

    events: tuple[str, ...] = ()  # event names to subscribe to; () is all
    adjust: Adjuster | None = None
    update: Callable[[nri_pb2.UpdateContainerRequest], nri_pb2.UpdateContainerResponse] | None = (
        None
    )
    refuse: set[str] = field(default_factory=set)  # answer with an error status
    stall: set[str] = field(default_factory=set)  # never answer
    garbage: set[str] = field(default_factory=set)  # answer bytes that do not parse
    disconnect: set[str] = field(default_factory=set)  # close the socket instead
    stop_reading: set[str] = field(default_factory=set)  # stop reading the socket for good
    # A validating plugin's verdict (ValidateContainerAdjustment); None: accept.
    validate: (
        Callable[
            [nri_pb2.ValidateContainerAdjustmentRequest],
            nri_pb2.ValidateContainerAdjustmentResponse,
        ]
        | None
    ) = None
    # Called while Synchronize is being answered (to make a pod appear "during" it).
    on_sync: Callable[[], None] | None = None
    # Called with each StateChange as it arrives, before it is answered (to make something
    # happen at a known point: while the plugin is caught up after Synchronize, say).
    on_event: Callable[[Seen], None] | None = None
    # Refuse only pods/containers whose name is in here (empty: refuse every one).
    refuse_names: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Seen:
    """One event the plugin was sent: its name, the pod's and the container's name."""

    event: str
    pod: str
    container: str = ""


class ScriptedPlugin:
    def __init__(
        self, name: str, idx: str, behaviour: Behaviour | None = None, record_to: str = ""
    ) -> None:
        self.record_to = record_to  # a file each event is appended to, as "EVENT pod container"
        self.name = name
        self.idx = idx
        self.behaviour = behaviour or Behaviour()
        self.seen: list[Seen] = []
        self.synced_pods: list[nri_pb2.PodSandbox] = []
        self.synced_containers: list[nri_pb2.Container] = []
        self.synchronized = False
        self.configured: nri_pb2.ConfigureRequest | None = None
        self.closed = threading.Event()
        self.requests: dict[str, list[bytes]] = {}
        self.last_call = 0  # the stream of our last call on the runtime's service
        self._sock: socket.socket | None = None
        self._write = threading.Lock()
        self._bufs: dict[int, bytearray] = {PLUGIN_CONN: bytearray(), RUNTIME_CONN: bytearray()}
        self._registered = threading.Event()
        self._register_status = -1
        self._stop_reading = threading.Event()
        self._next_stream = 3  # our calls on the runtime's service (1 was RegisterPlugin)
        self._answers: dict[int, ttrpc_pb2.Response] = {}
        self._answered = threading.Condition()

    # ---- connection -----------------------------------------------------------------------

    def connect(self, path: str, timeout_s: float = 10.0) -> None:
        """Connect and register; raises AssertionError when vmcri refuses or is silent."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        self.adopt(sock, timeout_s)

    def adopt(self, sock: socket.socket, timeout_s: float = 10.0) -> None:
        self._sock = sock
        threading.Thread(target=self._read_loop, daemon=True).start()
        request = nri_pb2.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.idx)
        envelope = ttrpc_pb2.Request(
            service="nri.pkg.api.v1alpha1.Runtime",
            method="RegisterPlugin",
            payload=request.SerializeToString(),
        )
        self._send(RUNTIME_CONN, 1, 1, envelope.SerializeToString())
        assert self._registered.wait(timeout_s), "vmcri did not answer RegisterPlugin"
        assert self._register_status == 0, f"RegisterPlugin refused ({self._register_status})"

    def update_containers(
        self, request: nri_pb2.UpdateContainersRequest, wait_s: float | None = 10.0
    ) -> nri_pb2.UpdateContainersResponse | None:
        """Call the runtime's UpdateContainers. With ``wait_s`` None, send it and return at
        once: from inside an event's answer (this plugin's one reader is busy there, so
        the response is read later; :meth:`answer_to` finds it)."""
        with self._answered:
            stream = self._next_stream
            self._next_stream += 2
        envelope = ttrpc_pb2.Request(
            service="nri.pkg.api.v1alpha1.Runtime",
            method="UpdateContainers",
            payload=request.SerializeToString(),
        )
        self._send(RUNTIME_CONN, stream, 1, envelope.SerializeToString())
        self.last_call = stream
        if wait_s is None:
            return None
        return self.answer_to(stream, wait_s)

    def answer_to(self, stream: int, wait_s: float) -> nri_pb2.UpdateContainersResponse:
        """The runtime's answer to our call on ``stream``; AssertionError if none or an error."""
        with self._answered:
            assert self._answered.wait_for(lambda: stream in self._answers, wait_s), (
                "vmcri did not answer UpdateContainers"
            )
            response = self._answers[stream]
        assert response.status.code == 0, response.status.message
        return nri_pb2.UpdateContainersResponse.FromString(response.payload)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        self.closed.set()

    def events_named(self, event: str) -> list[Seen]:
        return [s for s in self.seen if s.event == event]

    # ---- wire ---------------------------------------------------------------------------

    def _send(self, conn: int, stream: int, kind: int, body: bytes) -> None:
        frame = TTRPC.pack(len(body), stream, kind, 0) + body
        assert self._sock is not None
        with self._write:
            for i in range(0, len(frame), 4096):
                chunk = frame[i : i + 4096]
                self._sock.sendall(MUX.pack(conn, len(chunk)) + chunk)

    def _recv(self, n: int) -> bytes | None:
        assert self._sock is not None
        out = b""
        while len(out) < n:
            try:
                got = self._sock.recv(n - len(out))
            except OSError:
                return None
            if not got:
                return None
            out += got
        return out

    def _read_loop(self) -> None:
        while not self._stop_reading.is_set():
            header = self._recv(MUX.size)
            if header is None:
                break
            conn, length = MUX.unpack(header)
            body = self._recv(length) if length else b""
            if body is None:
                break
            buf = self._bufs.setdefault(conn, bytearray())
            buf += body
            while len(buf) >= TTRPC.size:
                size, stream, kind, _ = TTRPC.unpack_from(buf)
                if len(buf) < TTRPC.size + size:
                    break
                message = bytes(buf[TTRPC.size : TTRPC.size + size])
                del buf[: TTRPC.size + size]
                if conn == RUNTIME_CONN and kind == 2 and stream == 1:
                    self._register_status = ttrpc_pb2.Response.FromString(message).status.code
                    self._registered.set()
                elif conn == RUNTIME_CONN and kind == 2:
                    with self._answered:
                        self._answers[stream] = ttrpc_pb2.Response.FromString(message)
                        self._answered.notify_all()
                elif conn == PLUGIN_CONN and kind == 1:
                    self._serve(stream, ttrpc_pb2.Request.FromString(message))
        if not self._stop_reading.is_set():
            self.closed.set()

    # ---- the Plugin service ---------------------------------------------------------------

    def _serve(self, stream: int, request: ttrpc_pb2.Request) -> None:
        method = request.method
        self.requests.setdefault(method, []).append(request.payload)
        key, pod, container = method, "", ""
        reply: bytes = nri_pb2.Empty().SerializeToString()
        if method == "Configure":
            self.configured = nri_pb2.ConfigureRequest.FromString(request.payload)
            mask = 0
            for name in self.behaviour.events:
                mask |= 1 << (nri_pb2.Event.Value(name) - 1)
            reply = nri_pb2.ConfigureResponse(events=mask).SerializeToString()
        elif method == "Synchronize":
            sync = nri_pb2.SynchronizeRequest.FromString(request.payload)
            self.synced_pods.extend(sync.pods)
            self.synced_containers.extend(sync.containers)
            if self.behaviour.on_sync is not None and not sync.more:
                self.behaviour.on_sync()
            self.synchronized = not sync.more
            reply = nri_pb2.SynchronizeResponse(more=sync.more).SerializeToString()
        elif method == "StateChange":
            event = nri_pb2.StateChangeEvent.FromString(request.payload)
            key = nri_pb2.Event.Name(event.event)
            pod, container = event.pod.name, event.container.name
        elif method == "CreateContainer":
            create = nri_pb2.CreateContainerRequest.FromString(request.payload)
            key, pod, container = "CREATE_CONTAINER", create.pod.name, create.container.name
            if self.behaviour.adjust is not None:
                reply = self.behaviour.adjust(create).SerializeToString()
            else:
                reply = nri_pb2.CreateContainerResponse().SerializeToString()
        elif method == "UpdateContainer":
            update = nri_pb2.UpdateContainerRequest.FromString(request.payload)
            key, pod, container = "UPDATE_CONTAINER", update.pod.name, update.container.name
            if self.behaviour.update is not None:
                reply = self.behaviour.update(update).SerializeToString()
            else:
                reply = nri_pb2.UpdateContainerResponse().SerializeToString()
        elif method == "ValidateContainerAdjustment":
            check = nri_pb2.ValidateContainerAdjustmentRequest.FromString(request.payload)
            key, pod, container = (
                "VALIDATE_CONTAINER_ADJUSTMENT",
                check.pod.name,
                check.container.name,
            )
            verdict = nri_pb2.ValidateContainerAdjustmentResponse()
            if self.behaviour.validate is not None:
                verdict = self.behaviour.validate(check)
            reply = verdict.SerializeToString()
        elif method == "StopContainer":
            stop = nri_pb2.StopContainerRequest.FromString(request.payload)
            key, pod, container = "STOP_CONTAINER", stop.pod.name, stop.container.name
            reply = nri_pb2.StopContainerResponse().SerializeToString()
        if key not in ("Configure", "Synchronize"):
            self.seen.append(Seen(key, pod, container))
            if self.behaviour.on_event is not None and method == "StateChange":
                self.behaviour.on_event(Seen(key, pod, container))
            if self.record_to:
                with open(self.record_to, "a") as f:
                    f.write(f"{key} {pod} {container}\n")
        self._misbehave_or_answer(stream, {method, key}, {pod, container}, reply)

    def _misbehave_or_answer(
        self, stream: int, keys: set[str], names: set[str], reply: bytes
    ) -> None:
        b = self.behaviour
        if keys & b.stop_reading:
            self._stop_reading.set()
            return
        if keys & b.stall:
            return
        if keys & b.disconnect:
            self.close()
            return
        if keys & b.garbage:
            self._send(PLUGIN_CONN, stream, 2, b"\xff\xff\xff\xff garbage")
            return
        if keys & b.refuse and (not b.refuse_names or names & b.refuse_names):
            status = ttrpc_pb2.Status(code=2, message=f"{self.name} refuses {sorted(keys)}")
            self._send(
                PLUGIN_CONN, stream, 2, ttrpc_pb2.Response(status=status).SerializeToString()
            )
            return
        self._send(PLUGIN_CONN, stream, 2, ttrpc_pb2.Response(payload=reply).SerializeToString())


def socketpair_plugin(plugin: ScriptedPlugin) -> socket.socket:
    """The runtime's end of a socketpair whose other end ``plugin`` adopts (registering
    from a thread, as a launched plugin would)."""
    ours, theirs = socket.socketpair()
    threading.Thread(target=plugin.adopt, args=(theirs,), daemon=True).start()
    return ours


def run_launched(record_to: str) -> None:
    """The body of a pre-installed plugin that vmcri starts: take the inherited socket
    (NRI_PLUGIN_SOCKET names its fd), register under the name and index vmcri gave,
    record each event in ``record_to``, and live until vmcri hangs up."""
    plugin = ScriptedPlugin(
        os.environ["NRI_PLUGIN_NAME"], os.environ["NRI_PLUGIN_IDX"], record_to=record_to
    )
    plugin.adopt(socket.socket(fileno=int(os.environ["NRI_PLUGIN_SOCKET"])))
    with open(record_to, "a") as f:
        f.write("REGISTERED\n")
    plugin.closed.wait()


LAUNCHER = """#!{python}
import sys
sys.path.insert(0, {top!r})
from tests.support.nri_plugin import run_launched
run_launched({record_to!r})
"""


def install_launched(plugin_dir: str, name: str, record_to: str) -> None:
    """Make ``plugin_dir/name`` (NN-name) an executable running :func:`run_launched`."""
    import sys
    from pathlib import Path

    top = str(Path(__file__).resolve().parents[2])
    os.makedirs(plugin_dir, mode=0o755, exist_ok=True)
    path = Path(plugin_dir) / name
    path.write_text(LAUNCHER.format(python=sys.executable, top=top, record_to=record_to))
    path.chmod(0o755)
