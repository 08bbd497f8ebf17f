"""A loopback TCP relay that slows what the upstream sends (for kill -9 mid-pull tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ThrottlingProxy:
    """A loopback TCP relay that slows responses to ``rate`` bytes/s (for kill -9 tests)."""

    def __init__(self, target: str, rate: int) -> None:
        self.target_host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target_host, self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.rate), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        chunk = 16384
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop = True
        self._listener.close()
