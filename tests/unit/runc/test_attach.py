"""Attach for runc containers: the frame codec, the monitor's hub, the daemon's session.

The hub is driven the way the monitor drives it (a selector loop) on socket pairs,
pipes and a pty; nothing here needs root.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmcri.errors import FailedPrecondition, HostCommandError
from vmcri.handlers.runc import attach_frames as af
from vmcri.handlers.runc.attach_hub import CLIENT_BACKLOG, AttachHub
from vmcri.handlers.runc.streams import RuncAttachSession, attach

# ---- frames ---------------------------------------------------------------------------------


def test_frames_round_trip_in_any_split() -> None:
    wire = af.encode(af.STDIN, b"abc") + af.encode(af.STDIN_EOF) + af.encode_resize(45, 123)
    for split in range(len(wire) + 1):
        decoder = af.Decoder()
        frames = decoder.feed(wire[:split]) + decoder.feed(wire[split:])
        assert [(f.kind, f.payload) for f in frames[:2]] == [
            (af.STDIN, b"abc"),
            (af.STDIN_EOF, b""),
        ]
        assert af.decode_resize(frames[2].payload) == (45, 123)
        assert decoder.pending == 0


def test_bad_frames_are_refused() -> None:
    with pytest.raises(af.FrameError):
        af.Decoder().feed(struct.pack(">BI", 99, 0))
    with pytest.raises(af.FrameError):
        af.Decoder().feed(struct.pack(">BI", af.STDOUT, af.MAX_PAYLOAD + 1))
    with pytest.raises(af.FrameError):
        af.encode(42)
    with pytest.raises(af.FrameError):
        af.decode_resize(b"\x00")
    assert af.decode_resize(af.encode_resize(-3, 1 << 20)[af.HEADER.size :]) == (0, 0xFFFF)


def test_large_output_is_cut_into_frames() -> None:
    data = b"x" * (af.MAX_PAYLOAD * 2 + 5)
    assert [len(c) for c in af.chunks(data)] == [af.MAX_PAYLOAD, af.MAX_PAYLOAD, 5]


# ---- the monitor's hub ----------------------------------------------------------------------


class HubLoop:
    """A hub on a listener at ``path`` plus the selector loop the monitor would run."""

    def __init__(self, path: Path, stdin_fd: int | None, tty_fd: int | None, once: bool) -> None:
        self.sel = selectors.DefaultSelector()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        self.path = path
        self.hub = AttachHub(self.sel, listener, stdin_fd, tty_fd, once)

    def spin(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            for key, mask in self.sel.select(0.01):
                assert key.data is self.hub
                self.hub.on_event(key.fileobj, mask)

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        sock.settimeout(2.0)
        self.spin()
        return sock


def _read_frames(sock: socket.socket, want: int) -> list[af.Frame]:
    decoder = af.Decoder()
    frames: list[af.Frame] = []
    while len(frames) < want:
        data = sock.recv(65536)
        if not data:
            break
        frames += decoder.feed(data)
    return frames


@pytest.fixture
def stdin_pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)  # a missing write fails the test instead of hanging it
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_output_reaches_every_client_and_stdin_is_merged(
    tmp_path: Path, stdin_pipe: tuple[int, int]
) -> None:
    r, w = stdin_pipe
    loop = HubLoop(tmp_path / "a.sock", w, None, once=False)
    one, two = loop.connect(), loop.connect()
    assert loop.hub.client_count == 2
    loop.hub.broadcast("stdout", b"out")
    loop.hub.broadcast("stderr", b"err")
    for client in (one, two):
        frames = _read_frames(client, 2)
        assert [(f.kind, f.payload) for f in frames] == [(af.STDOUT, b"out"), (af.STDERR, b"err")]
    one.sendall(af.encode(af.STDIN, b"from-one "))
    loop.spin()
    two.sendall(af.encode(af.STDIN, b"from-two"))
    two.sendall(af.encode(af.STDIN_EOF))  # without stdin_once: ignored
    loop.spin()
    assert os.read(r, 100) == b"from-one from-two"
    two.close()
    loop.spin()
    assert loop.hub.client_count == 1
    one.sendall(af.encode(af.STDIN, b"still open"))
    loop.spin()
    assert os.read(r, 100) == b"still open"
    loop.hub.finish()
    assert _read_frames(one, 1) == [af.Frame(af.EXIT)]
    assert one.recv(10) == b""  # the monitor closed the connection after EXIT
    assert os.read(r, 10) == b""  # and the container's stdin


def test_stdin_once_closes_stdin_when_the_first_stdin_session_hangs_up(
    tmp_path: Path, stdin_pipe: tuple[int, int]
) -> None:
    r, w = stdin_pipe
    loop = HubLoop(tmp_path / "a.sock", w, None, once=True)
    watcher = loop.connect()  # no stdin from this one: its leaving changes nothing
    watcher.close()
    loop.spin()
    writer = loop.connect()
    writer.sendall(af.encode(af.STDIN, b"last words"))
    loop.spin()
    writer.close()
    loop.spin()
    assert os.read(r, 100) == b"last words"
    assert os.read(r, 100) == b""  # EOF: the write end is closed
    late = loop.connect()
    late.sendall(af.encode(af.STDIN, b"dropped"))
    loop.spin()
    assert loop.hub.client_count == 1
    loop.hub.finish()


def test_a_client_that_does_not_read_is_dropped_not_waited_for(tmp_path: Path) -> None:
    loop = HubLoop(tmp_path / "a.sock", None, None, once=False)
    slow = loop.connect()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = b"y" * 65536
    for _ in range(CLIENT_BACKLOG // len(chunk) + 64):
        loop.hub.broadcast("stdout", chunk)  # must never block
    assert loop.hub.client_count == 0
    slow.close()
    loop.hub.finish()


def test_resize_and_tty_stdin_go_to_the_pty(tmp_path: Path) -> None:
    master, slave = os.openpty()
    os.set_blocking(slave, False)
    try:
        loop = HubLoop(tmp_path / "a.sock", os.dup(master), os.dup(master), once=True)
        assert termios.tcgetwinsize(slave) == (24, 80)
        client = loop.connect()
        client.sendall(af.encode_resize(45, 123) + af.encode_resize(0, 0))  # 0x0 is ignored
        client.sendall(af.encode(af.STDIN, b"typed\n"))
        loop.spin()
        assert termios.tcgetwinsize(slave) == (45, 123)
        assert os.read(slave, 100) == b"typed\n"
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ICANON  # read the raw ^D instead of a canonical EOF
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        client.sendall(af.encode(af.STDIN_EOF))  # stdin_once on a tty: a ^D, the pty stays
        loop.spin()
        assert os.read(slave, 100) == b"\x04"
        loop.hub.finish()
    finally:
        os.close(master)
        os.close(slave)


# ---- the daemon's session ---------------------------------------------------------------


def test_session_relays_both_ways_and_ends_on_exit() -> None:
    ours, monitor = socket.socketpair()
    session = RuncAttachSession(ours)
    received: list[bytes] = []

    def fake_monitor() -> None:
        decoder = af.Decoder()
        while len(received) < 3:
            received.extend(
                f.kind.to_bytes(1, "big") + f.payload for f in decoder.feed(monitor.recv(100))
            )
        monitor.sendall(
            af.encode(af.STDOUT, b"o") + af.encode(af.STDERR, b"e") + af.encode(af.EXIT)
        )

    thread = threading.Thread(target=fake_monitor)
    thread.start()
    session.write_stdin(b"in")
    session.resize(123, 45)
    session.close_stdin()
    chunks = [(c.stream, c.data) for c in session.output()]
    thread.join()
    assert chunks == [("stdout", b"o"), ("stderr", b"e")]
    assert received == [
        bytes([af.STDIN]) + b"in",
        bytes([af.RESIZE]) + struct.pack(">HH", 45, 123),
        bytes([af.STDIN_EOF]),
    ]
    assert session.wait(0) == 0
    session.close()
    session.close()
    with pytest.raises(FailedPrecondition):
        session.write_stdin(b"after close")
    monitor.close()


def test_session_refuses_garbage_from_the_monitor() -> None:
    ours, monitor = socket.socketpair()
    monitor.sendall(b"\xff" * 8)
    with pytest.raises(HostCommandError):
        list(RuncAttachSession(ours).output())
    monitor.close()


def test_attach_without_a_monitor_is_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition):
        attach(tmp_path / "missing")
    with pytest.raises(FailedPrecondition):
        attach(tmp_path)  # a state dir, but nobody listens


def test_attach_finds_the_socket_below_a_path_too_long_for_sockaddr(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(deep)  # the monitor binds by relative name, as here
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(af.SOCKET_NAME)
        listener.listen(1)
    finally:
        os.chdir(cwd)
    session = attach(deep)
    conn, _ = listener.accept()
    conn.sendall(af.encode(af.EXIT))
    assert list(session.output()) == []
    session.close()
    conn.close()
    listener.close()
