"""Fakes of the runtime behind the streaming server: a cat-like process, an echo port."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from vmcri.errors import FailedPrecondition, Unavailable
from vmcri.streaming.requests import AttachRequest, ExecRequest
from vmcri.supervisor.api import StreamOutput


class CatProcess:
    """Echoes stdin to stdout; prints a banner on stderr; exits with ``exit_code`` at stdin EOF."""

    def __init__(self, exit_code: int = 0, banner: bytes = b"", stdin: bool = True) -> None:
        self.exit_code = exit_code
        self._out: queue.Queue[StreamOutput | None] = queue.Queue()
        self.sizes: list[tuple[int, int]] = []
        self.closed = threading.Event()
        self.stdin_closed = threading.Event()
        if banner:
            self._out.put(StreamOutput("stderr", banner))
        if not stdin:
            self.close_stdin()

    def output(self) -> Iterator[StreamOutput]:
        while (item := self._out.get()) is not None:
            yield item

    def write_stdin(self, data: bytes) -> None:
        if self.stdin_closed.is_set():
            raise FailedPrecondition("stdin is closed")
        self._out.put(StreamOutput("stdout", data))

    def close_stdin(self) -> None:
        if not self.stdin_closed.is_set():
            self.stdin_closed.set()
            self._out.put(StreamOutput("stdout", b""))
            self._out.put(StreamOutput("stderr", b""))
            self._out.put(None)

    def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))
        self._out.put(StreamOutput("stdout", f"size {width}x{height}\n".encode()))

    def wait(self, timeout: float) -> int | None:
        return self.exit_code if self.stdin_closed.is_set() else None

    def close(self) -> None:
        self.closed.set()
        self._out.put(None)


class EchoPort:
    """A port that answers every chunk upper-cased, and closes after the client half-closes."""

    def __init__(self) -> None:
        self._q: queue.Queue[bytes] = queue.Queue()
        self.closed = threading.Event()

    def send(self, data: bytes) -> None:
        self._q.put(data.upper())

    def recv(self, max_bytes: int) -> bytes:
        return self._q.get()

    def close_write(self) -> None:
        self._q.put(b"")

    def close(self) -> None:
        self.closed.set()
        self._q.put(b"")


@dataclass
class FakeRuntime:
    processes: list[CatProcess] = field(default_factory=list)
    ports: dict[int, list[EchoPort]] = field(default_factory=dict)
    exit_code: int = 0

    def exec_session(self, request: ExecRequest) -> CatProcess:
        process = CatProcess(self.exit_code, b"hello from stderr\n", stdin=request.stdin)
        self.processes.append(process)
        return process

    def attach_session(self, request: AttachRequest) -> CatProcess:
        process = CatProcess(0, stdin=request.stdin)
        self.processes.append(process)
        return process

    def port_connect(self, sandbox_id: str, port: int) -> EchoPort:
        if port == 1:
            raise Unavailable("connection refused")
        conn = EchoPort()
        self.ports.setdefault(port, []).append(conn)
        return conn
