"""The real guest agent run on the host (root) over unix://, with real runc, a private root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmcri.agent import types
from vmcri.agent.client import AgentClient

REPO = Path(__file__).resolve().parents[3]


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


class EventSink:
    """Collects agent events; tests wait for the ones they expect."""

    def __init__(self) -> None:
        self.events: list[types.AgentEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: types.AgentEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def output(self, container_id: str, stream: str = "stdout", exec_id: str = "") -> bytes:
        with self._cond:
            return b"".join(
                e.data
                for e in self.events
                if isinstance(e, types.OutputChunk)
                and e.container_id == container_id
                and e.exec_id == exec_id
                and e.stream == stream
            )

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; events: {self.events[-20:]}")
                self._cond.wait(remaining)

    def exit_of(self, container_id: str) -> types.ContainerExit | None:
        for e in self.events:
            if isinstance(e, types.ContainerExit) and e.container_id == container_id:
                return e
        return None


class AgentProcess:
    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.socket = root / "agent.sock"
        self.state = root / "state"
        self.scratch = root / "scratch"
        self.runc_root = root / "runc"
        self.url = f"unix://{self.socket}"
        self.log = root / "agent.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "vmcri.agent", "--listen", self.url,
                "--state-dir", str(self.state), "--scratch-dir", str(self.scratch),
                "--runc-root", str(self.runc_root), "--no-host-settings", "--poweroff", "no",
                "--log-level", "debug", *extra,
            ],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def client(self, sink: EventSink | None = None) -> AgentClient:
        client = AgentClient(self.url, on_event=sink, connect_timeout=5, call_timeout=30)
        client.connect()
        return client

    def runc_list(self) -> list[Any]:
        out = subprocess.run(
            ["runc", "--root", str(self.runc_root), "list", "--format", "json"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        return json.loads(out) if out.strip() not in (b"", b"null") else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    _require("runc")
    root = tmp_path_factory.mktemp("agent")
    proc = AgentProcess(root)
    try:
        yield proc
    finally:
        proc.stop()
        for container in proc.runc_list():
            subprocess.run(["runc", "--root", str(proc.runc_root), "delete", "-f", container["id"]])
        for mount_point in _mounts_under(root):
            subprocess.run(["umount", "-l", mount_point], capture_output=True)


def _mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first (what a failed test may leave behind)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(f"{root}/"):
            found.append(point)
    return sorted(found, reverse=True)


@pytest.fixture(scope="module")
def busybox_lower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer rootfs: busybox-static plus a relative symlink per applet."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is not installed")
    lower = tmp_path_factory.mktemp("lower")
    (lower / "bin").mkdir()
    shutil.copy2(busybox, lower / "bin" / "busybox")
    applets = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (lower / "bin" / applet).symlink_to("busybox")
    for name in ("proc", "sys", "dev", "tmp", "etc"):
        (lower / name).mkdir()
    (lower / "etc" / "hostname").write_text("agent-test\n")
    return lower


def make_spec(args: list[str], *, memory_limit: int = 0, terminal: bool = False) -> bytes:
    """A minimal runc 1.1 spec (from ``runc spec``), for tests only: vmcri/oci/spec.py is the
    real generator."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    spec_dir = tmp / f"spec-{os.getpid()}-{threading.get_ident()}"
    spec_dir.mkdir(exist_ok=True)
    try:
        subprocess.run(["runc", "spec", "--bundle", str(spec_dir)], check=True)
        spec = json.loads((spec_dir / "config.json").read_text())
    finally:
        shutil.rmtree(spec_dir)
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["hostname"] = "agent-test"
    if memory_limit:
        spec["linux"]["resources"]["memory"] = {"limit": memory_limit, "swap": memory_limit}
    return json.dumps(spec).encode()
