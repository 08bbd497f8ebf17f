"""sd_notify over real datagram sockets: a path, and an abstract name ('@')."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vmcri.host import sdnotify


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_ready_reaches_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _receiver(str(path)) as sock:
        assert sdnotify.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_ready_reaches_an_abstract_socket() -> None:
    name = f"vmcri-test-{os.getpid()}"
    with _receiver(b"\0" + name.encode()) as sock:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": f"@{name}"})
        assert sock.recv(4096) == b"READY=1"


def test_ready_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"

    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with _receiver(str(path)) as sock:
        assert sdnotify.ready("serving on /run/vmcri/vmcri.sock")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving on /run/vmcri/vmcri.sock"


def test_without_systemd_nothing_is_sent() -> None:
    assert not sdnotify.notify("READY=1", {})


def test_a_dead_or_bogus_socket_does_not_raise(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative/name"})
