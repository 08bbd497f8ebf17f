"""The socket external NRI plugins connect to: root-only.

The directory is made 0700 and the socket 0600, and each connection's peer must be the
daemon's own user, root (SO_PEERCRED): a plugin sees every pod and can change every
container, so no other user may be one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


MAX_STARTING = 8
"""Connections registering at once; more are closed at once (each waits at most the
registration timeout)."""


class Listener:
    def __init__(self, path: str, on_connect: Callable[[socket.socket], None]) -> None:
        self.path = Path(path)
        self._on_connect = on_connect
        self._starting = threading.BoundedSemaphore(MAX_STARTING)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Raises OSError when the socket cannot be made."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="nri-listener", daemon=True)
        self._thread.start()
        log.info("NRI: external plugins connect to %s", self.path)

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _ = struct.unpack("3i", creds)
            if uid != 0:
                log.warning(
                    "NRI: refused a plugin connection from pid %d (uid %d, not root)", pid, uid
                )
                conn.close()
                continue
            if not self._starting.acquire(blocking=False):
                log.warning(
                    "NRI: %d plugins are registering already; one more refused", MAX_STARTING
                )
                conn.close()
                continue
            threading.Thread(
                target=self._start_one, args=(conn,), name="nri-plugin-start", daemon=True
            ).start()

    def _start_one(self, conn: socket.socket) -> None:
        try:
            self._on_connect(conn)
        finally:
            self._starting.release()
