"""A real vmcri daemon on a temporary socket, talked to over gRPC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from vmcri.api import api_pb2_grpc

# VM templates (one boot per guest image version and VM shape, ~15 s under TCG) shared by
# every daemon the tests start, and kept between runs: they are keyed by everything they
# depend on and verified before each use. tests/integration/vm/test_vm_template.py makes
# its own from scratch. VMCRI_TEST_TEMPLATES names another directory: daemons of another
# guest image (another worktree) would discard these as stale.
SHARED_TEMPLATES = Path(os.environ.get("VMCRI_TEST_TEMPLATES", "/var/tmp/vmcri-test-templates"))


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    socket: Path
    root: Path
    state: Path
    log: Path

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel())


def start_daemon(
    tmp: Path,
    *extra: str,
    config: Path | None = None,
    log_level: str = "debug",
    launcher: Sequence[str] = (),
    templates: Path | None = SHARED_TEMPLATES,
) -> RunningDaemon:
    """``vmcri serve`` below ``tmp``, once its socket answers; ``launcher`` runs it
    (e.g. in a network namespace of its own: the command gets the daemon's argv).
    ``templates``: VM templates shared with other daemons (None: the daemon's own)."""
    sock = tmp / "run" / "vmcri.sock"
    root, state, log = tmp / "root", tmp / "state", tmp / "daemon.log"
    link = root / "backends" / "vm" / "templates"
    if templates is not None and not link.exists():
        templates.mkdir(parents=True, exist_ok=True, mode=0o700)
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        link.symlink_to(templates)
    args = [sys.executable, "-m", "vmcri", "serve", "--socket", str(sock), "--root", str(root)]
    args += ["--state", str(state), "--log-level", log_level, *extra]
    if config is None:
        # Hermetic: the host's own /etc/cni/net.d (which scripts/run.sh may have filled)
        # must not decide what a test sees; an empty dir of the test's means "no network".
        (tmp / "net.d").mkdir(parents=True, exist_ok=True)
        config = tmp / "daemon-config.toml"
        config.write_text(f'[network]\ncni_conf_dir = "{tmp / "net.d"}"\n')
    args += ["--config", str(config)]
    with open(log, "ab") as out:
        process = subprocess.Popen([*launcher, *args], stderr=out, stdout=out)
    daemon = RunningDaemon(process, sock, root, state, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"daemon exited {process.returncode}: {log.read_text()}")
        if sock.exists():
            try:
                grpc.channel_ready_future(daemon.channel()).result(timeout=1)
                return daemon
            except grpc.FutureTimeoutError:
                pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"daemon did not come up: {log.read_text()}")


def stop_daemon(daemon: RunningDaemon, sig: int = signal.SIGTERM) -> int:
    if daemon.process.poll() is None:
        os.kill(daemon.process.pid, sig)
    return daemon.process.wait(timeout=30)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    running = start_daemon(tmp_path)
    yield running
    stop_daemon(running)
