"""sd_notify over real datagram sockets: a path, and an abstract name ('@')."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vmcri.host.sdnotify import Notifier


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_ready_reaches_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _receiver(str(path)) as sock:
        assert Notifier.from_environment({"NOTIFY_SOCKET": str(path)}).ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_ready_reaches_an_abstract_socket() -> None:
    name = f"vmcri-test-{os.getpid()}"
    with _receiver(b"\0" + name.encode()) as sock:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.ready()
        assert notifier.stopping()
        assert sock.recv(4096) == b"READY=1"
        assert sock.recv(4096) == b"STOPPING=1"


def test_children_do_not_inherit_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # runc proxies $NOTIFY_SOCKET into containers: with it, runc start fails, and a container
    # could tell systemd things in vmcri's name. Reading the variable must remove it.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    notifier = Notifier.from_environment()
    assert notifier.name == str(tmp_path / "notify")
    assert "NOTIFY_SOCKET" not in os.environ
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET', ''))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert child.stdout.strip() == ""


def test_without_systemd_nothing_is_sent() -> None:
    assert not Notifier.from_environment({}).ready()


def test_a_dead_or_bogus_socket_does_not_raise(tmp_path: Path) -> None:
    assert not Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).ready()
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "relative/name"}).ready()
