"""A hostile NRI plugin against the real daemon (runc pods, so no VM boot is needed).

An NRI plugin is a client of the daemon's socket: it may stall a call, stop reading,
answer garbage or announce a 4 GiB message. Each is bounded to the one call it
stalls, the plugin is disconnected and named in the log, the call goes on without it,
and other pods' calls never wait behind it. Only root may be a plugin at all.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.integration.harness import NO_POD_NETWORK
from tests.integration.nri.conftest import (
    REQUEST_TIMEOUT_S,
    PluginFactory,
    nri_config,
    plugins_of,
    remove_pod,
)
from tests.integration.vm.conftest import VmEnv, vm_daemon
from tests.support.nri_plugin import Behaviour
from tests.support.wait import wait_for
from vmcri.api import api_pb2 as pb
from vmcri.api import nri_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmEnv]:
    tmp = tmp_path_factory.mktemp("nri-hostile")
    with vm_daemon(tmp, NO_POD_NETWORK + nri_config(tmp), wait_template=False) as env:
        yield env


@pytest.fixture
def connect(env: VmEnv) -> Iterator[PluginFactory]:
    with plugins_of(env) as make:
        yield make


def _log(env: VmEnv) -> str:
    return (env.tmp / "daemon.log").read_text()


def test_a_stalled_create_is_bounded_and_other_pods_do_not_wait(
    env: VmEnv,
    connect: PluginFactory,
) -> None:
    plugin = connect("stall", "10", Behaviour(stall={"CREATE_CONTAINER"}))
    victim, pod = env.run_pod("victim", handler="runc")
    outcome: list[object] = []

    def create() -> None:
        try:
            outcome.append(env.create(victim, pod, "app", ["sleep", "3600"]))
        except grpc.RpcError as exc:
            outcome.append(exc)

    started = time.monotonic()
    stalled = threading.Thread(target=create)
    stalled.start()
    wait_for(lambda: plugin.events_named("CREATE_CONTAINER"), 60, "the create at the plugin")
    # Another pod's RunPodSandbox goes through while the create is held.
    other_started = time.monotonic()
    other, _ = env.run_pod("bystander", handler="runc")
    other_took = time.monotonic() - other_started
    stalled.join(REQUEST_TIMEOUT_S * 10)
    took = time.monotonic() - started
    assert not stalled.is_alive()
    assert isinstance(outcome[0], str), outcome  # created, without the plugin
    assert took < REQUEST_TIMEOUT_S + 20
    assert other_took < took
    assert "NRI plugin 10-stall: disconnected: CreateContainer: no answer" in _log(env)
    remove_pod(env, victim)
    remove_pod(env, other)


@pytest.mark.parametrize("misbehaviour", ["garbage", "stop_reading", "disconnect"])
def test_a_plugin_that_breaks_the_protocol_is_disconnected_and_named(
    env: VmEnv,
    connect: PluginFactory,
    misbehaviour: str,
) -> None:
    name = misbehaviour.replace("_", "")
    bad = Behaviour(**{misbehaviour: {"RUN_POD_SANDBOX"}})  # type: ignore[arg-type]
    connect(name, "20", bad)
    started = time.monotonic()
    sandbox_id, _ = env.run_pod(f"after-{name}", handler="runc")
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 30
    wait_for(lambda: f"NRI plugin 20-{name}: disconnected" in _log(env), 10, "the disconnect")
    remove_pod(env, sandbox_id)


def test_an_oversized_announcement_is_cut_off_before_its_body(env: VmEnv) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(env.tmp / "nri" / "nri.sock"))
    sock.sendall(struct.pack(">II", 2, 0xFFFFFFFF))
    sock.settimeout(30)
    assert sock.recv(1) == b""
    sock.close()
    wait_for(lambda: "a 4294967295-byte chunk" in _log(env), 10, "the refusal in the log")
    env.runtime.Version(pb.VersionRequest(), timeout=10)


def test_only_root_may_connect(env: VmEnv) -> None:
    path = env.tmp / "nri" / "nri.sock"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    if os.geteuid() != 0:
        pytest.skip("needs root to play another user")
    code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
    result = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        user=65534,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "PermissionError" in result.stderr


def test_a_hostile_eviction_names_one_whole_id_and_its_reason_is_bounded(
    env: VmEnv,
    connect: PluginFactory,
) -> None:
    """Evictions name containers by their whole ID (a prefix, an empty ID, the same one
    asked 300 times do nothing more), and the reason kubelet is shown is cut and made
    printable. The plugin's call is answered at once whatever it asks."""
    plugin = connect("evictor", "30", Behaviour())
    sandbox_id, pod = env.run_pod("evict-target", handler="runc")
    victim = env.create(sandbox_id, pod, "victim", ["sleep", "3600"])
    env.start(victim)
    ask = nri_pb2.UpdateContainersRequest()
    for wrong in ("", victim[:1], victim[:12], victim + "0", "../" + victim):
        ask.evict.add(container_id=wrong, reason="guess")
    started = time.monotonic()
    assert plugin.update_containers(ask) is not None
    # Decided before the answer: none of these is queued, the victim runs on.
    assert time.monotonic() - started < 5
    other = env.create(sandbox_id, pod, "marker", ["sleep", "3600"])
    env.start(other)
    assert env.status(victim).state == pb.CONTAINER_RUNNING
    flood = nri_pb2.UpdateContainersRequest()
    for _ in range(300):
        flood.evict.add(container_id=victim, reason="\x1b[2J\n" + "x" * 10_000)
    started = time.monotonic()
    assert plugin.update_containers(flood) is not None
    assert time.monotonic() - started < 5
    wait_for(lambda: env.status(victim).reason == "Evicted", 60, "the eviction")
    message = env.status(victim).message
    assert message.startswith("evicted by NRI plugin 30-evictor: ?[2J?xxx")
    assert message.isprintable() and len(message) < 600
    assert _log(env).count(f"NRI plugin 30-evictor: evicts container {victim}") == 1
    assert env.status(other).state == pb.CONTAINER_RUNNING
    remove_pod(env, sandbox_id)
