"""Exec/attach over WebSocket (``v5.channel.k8s.io``, ``v4.channel.k8s.io``).

Every binary message starts with its channel byte: 0 stdin, 1 stdout, 2 stderr,
3 error (the metav1.Status JSON), 4 resize (``{"Width":..,"Height":..}``). In v5 the
client ends a channel with the message ``255, <channel>`` (how stdin EOF is sent).
Like kubelet, the server first sends an empty message on the lowest channel it writes,
so the client knows the session is up.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence

from vmcri.errors import ProtocolError
from vmcri.streaming.remotecommand import ClientGone, Outcome, parse_sizes
from vmcri.streaming.websocket import WebSocketClosed, WebSocketConnection

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
CHANNEL_OF = {"stdout": STDOUT, "stderr": STDERR}
STDIN_QUEUE = 64  # messages; the reader waits when the process does not read


class WebSocketCommandChannels:
    def __init__(
        self,
        ws: WebSocketConnection,
        protocol: str,
        cmd: Sequence[str],
        *,
        stdout: bool,
        stderr: bool,
    ) -> None:
        self._ws = ws
        self._protocol = protocol
        self._cmd = tuple(cmd)
        self._writable = {"stdout": stdout, "stderr": stderr}
        self._stdin: queue.Queue[bytes] = queue.Queue(STDIN_QUEUE)
        self._sizes: queue.Queue[tuple[int, int] | None] = queue.Queue(16)
        self._stdin_closed = False
        self.gone = threading.Event()
        first = STDOUT if stdout else STDERR if stderr else ERROR
        with contextlib.suppress(WebSocketClosed):
            ws.send(bytes([first]))
        threading.Thread(target=self._read_loop, name="ws-reader", daemon=True).start()

    def _read_loop(self) -> None:
        resize = bytearray()
        try:
            while True:
                _, message = self._ws.receive()
                if not message:
                    continue
                channel, data = message[0], message[1:]
                if channel == STDIN and not self._stdin_closed and data:
                    self._put_stdin(data)
                elif channel == RESIZE:
                    resize += data
                    for size in parse_sizes(resize):
                        with contextlib.suppress(queue.Full):
                            self._sizes.put_nowait(size)
                elif channel == CLOSE and self._protocol == V5 and data[:1] == bytes([STDIN]):
                    self._close_stdin()
        except (WebSocketClosed, ProtocolError):
            pass
        finally:
            self._close_stdin()
            with contextlib.suppress(queue.Full):
                self._sizes.put_nowait(None)
            self.gone.set()

    def _put_stdin(self, data: bytes) -> None:
        while not self._ws.closed.is_set():
            try:
                self._stdin.put(data, timeout=1.0)
                return
            except queue.Full:
                continue

    def _close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            with contextlib.suppress(queue.Full):
                self._stdin.put(b"", timeout=1.0)

    def read_stdin(self) -> bytes:
        return self._stdin.get()

    def resizes(self) -> Iterator[tuple[int, int]]:
        while (size := self._sizes.get()) is not None:
            yield size

    def write(self, stream: str, data: bytes) -> None:
        if not self._writable.get(stream):
            return
        try:
            self._ws.send(bytes([CHANNEL_OF[stream]]) + data)
        except WebSocketClosed as exc:
            raise ClientGone(str(exc)) from exc

    def finish(self, outcome: Outcome) -> None:
        with contextlib.suppress(WebSocketClosed):
            self._ws.send(bytes([ERROR]) + outcome.status_json(self._cmd))
        self._ws.close()
        self.gone.wait(2.0)  # the client's CLOSE answer, or its hang-up

    def wait_gone(self) -> None:
        self.gone.wait()
