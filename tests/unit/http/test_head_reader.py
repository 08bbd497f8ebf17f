"""The head reader's selector thread when accept fails for want of file descriptors."""

from __future__ import annotations

import errno
import socket
import threading
import time

from tests.support.wait import wait_for
from vmcri.http.admission import ACCEPT_PAUSE_S, AdmissionLimits, HeadReader
from vmcri.http.io import HttpRequest


class _OutOfFds(socket.socket):
    """A listener whose accept fails with EMFILE until ``fds_back`` is set."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.fds_back = threading.Event()
        self.failed_accepts = 0

    def accept(self) -> tuple[socket.socket, object]:
        if not self.fds_back.is_set():
            self.failed_accepts += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_accepts_pause_while_fds_are_out_and_resume_when_they_are_back() -> None:
    listener = _OutOfFds()
    listener.bind(("127.0.0.1", 0))
    heads: list[HttpRequest] = []

    def on_head(sock: socket.socket, request: HttpRequest) -> None:
        heads.append(request)
        sock.close()

    reader = HeadReader(listener, AdmissionLimits(), on_head)
    reader.start()
    client = socket.create_connection(listener.getsockname(), timeout=5)
    try:
        client.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_for(lambda: listener.failed_accepts > 0, 5, "a failed accept")
        # Over a window of four pauses the listener, still readable, is tried about
        # once a pause, not in a spin (which made tens of thousands of tries here).
        window = 4 * ACCEPT_PAUSE_S
        before = listener.failed_accepts
        time.sleep(window)  # an observation window, not a wait for an event
        assert listener.failed_accepts - before <= 4 + 2
        listener.fds_back.set()
        wait_for(lambda: heads, 5, "the waiting connection's head")
        assert heads[0].path == "/x"
    finally:
        client.close()
        reader.stop()
