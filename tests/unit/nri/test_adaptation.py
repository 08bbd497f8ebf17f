"""The plugins as vmcri calls them, over real sockets, with scripted plugins
(tests/support/nri_plugin.py): registration, subscription, order, refusals, conflicts,
synchronization, and plugins that stall, answer garbage or hang up."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nri_plugin import Behaviour, ScriptedPlugin
from tests.support.wait import wait_for
from vmcri.api import nri_pb2
from vmcri.config import NriConfig
from vmcri.errors import PluginError
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, KeyValue, Metadata, PodConfig, Resources
from vmcri.nri.adaptation import Adaptation
from vmcri.store.records import ContainerRecord, SandboxRecord, SandboxState
from vmcri.store.store import Store

TIMEOUT_S = 1.0


def _pod(name: str) -> SandboxRecord:
    meta = Metadata(name=name, uid=f"uid-{name}", namespace="ns")
    return SandboxRecord(
        id=new_id(), handler="runc", backend="runc", config=PodConfig(metadata=meta),
        state=SandboxState.READY,
    )  # fmt: skip


def _container(pod: SandboxRecord, name: str) -> ContainerRecord:
    config = ContainerConfig(metadata=Metadata(name=name), image="busybox")
    return ContainerRecord(
        id=new_id(), sandbox_id=pod.id, config=config, image_id="sha256:ab", image_name="x"
    )


class Env:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "store")
        self.updates: list[tuple[str, Resources]] = []
        config = NriConfig(
            enable=True,
            socket_path=str(tmp / "nri" / "nri.sock"),
            plugin_path=str(tmp / "none"),
            request_timeout_s=TIMEOUT_S,
            registration_timeout_s=TIMEOUT_S,
        )
        self.nri = Adaptation(
            config, self.store, lambda cid, r: self.updates.append((cid, r)), lambda s: False
        )
        self.nri.start()
        self.socket = config.socket_path
        self.plugins: list[ScriptedPlugin] = []

    def plugin(self, name: str, idx: str, behaviour: Behaviour | None = None) -> ScriptedPlugin:
        plugin = ScriptedPlugin(name, idx, behaviour)
        plugin.connect(self.socket)
        self.plugins.append(plugin)
        wait_for(lambda: any(p.name == f"{idx}-{name}" for p in self.nri.plugins()), 5, name)
        return plugin


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.nri.stop()
    for p in e.plugins:
        p.close()


def test_socket_is_root_only(env: Env) -> None:
    path = Path(env.socket)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_plugin_is_configured_then_synchronized_with_what_exists(env: Env) -> None:
    pod = env.store.sandboxes.add(_pod("old"))
    env.store.containers.add(_container(pod, "c"))
    plugin = env.plugin("rec", "10")
    assert plugin.configured is not None and plugin.configured.runtime_name == "vmcri"
    assert plugin.configured.request_timeout == int(TIMEOUT_S * 1000)
    assert [p.name for p in plugin.synced_pods] == ["old"]
    assert [c.name for c in plugin.synced_containers] == ["c"]
    assert plugin.synchronized


def test_events_arrive_in_lifecycle_order_and_only_those_subscribed(env: Env) -> None:
    everything = env.plugin("all", "10")
    pods_only = env.plugin("pods", "20", Behaviour(events=("RUN_POD_SANDBOX",)))
    pod = env.store.sandboxes.add(_pod("p"))
    record = _container(pod, "c")
    env.nri.run_pod_sandbox(pod)
    record = env.nri.create_container(pod, record)
    env.nri.post_create_container(pod, record)
    env.nri.start_container(pod, record)
    env.nri.post_start_container(pod, record)
    env.nri.container_stopped(record)
    env.nri.remove_container(env.store.containers.add(record))
    env.nri.stop_pod_sandbox(pod)
    env.nri.remove_pod_sandbox(pod)
    assert [s.event for s in everything.seen] == [
        "RUN_POD_SANDBOX",
        "CREATE_CONTAINER",
        "POST_CREATE_CONTAINER",
        "START_CONTAINER",
        "POST_START_CONTAINER",
        "STOP_CONTAINER",
        "REMOVE_CONTAINER",
        "STOP_POD_SANDBOX",
        "REMOVE_POD_SANDBOX",
    ]
    assert {s.pod for s in everything.seen} == {"p"}
    assert [s.event for s in pods_only.seen] == ["RUN_POD_SANDBOX"]


def test_plugins_are_called_in_index_order(env: Env) -> None:
    order: list[str] = []

    def adjuster(name: str) -> Behaviour:
        def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
            order.append(name)
            return nri_pb2.CreateContainerResponse()

        return Behaviour(events=("CREATE_CONTAINER",), adjust=adjust)

    env.plugin("late", "90", adjuster("late"))
    env.plugin("early", "05", adjuster("early"))
    pod = _pod("p")
    env.nri.create_container(pod, _container(pod, "c"))
    assert order == ["early", "late"]


def test_an_adjustment_reaches_the_config_and_a_conflict_is_refused(env: Env) -> None:
    def env_adjust(value: str) -> Behaviour:
        def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
            out = nri_pb2.CreateContainerResponse()
            out.adjust.env.add(key="FROM_PLUGIN", value=value)
            return out

        return Behaviour(events=("CREATE_CONTAINER",), adjust=adjust)

    env.plugin("a", "10", env_adjust("a"))
    pod = _pod("p")
    adjusted = env.nri.create_container(pod, _container(pod, "c"))
    assert [(e.key, e.value) for e in adjusted.config.envs] == [("FROM_PLUGIN", "a")]
    env.plugin("b", "20", env_adjust("b"))
    with pytest.raises(PluginError, match="10-a and 20-b both adjust env 'FROM_PLUGIN'"):
        env.nri.create_container(pod, _container(pod, "c2"))


def test_a_refusal_fails_run_pod_sandbox_but_not_teardown(env: Env) -> None:
    env.plugin("no", "10", Behaviour(refuse={"RUN_POD_SANDBOX", "STOP_POD_SANDBOX"}))
    pod = _pod("p")
    with pytest.raises(PluginError, match=r"10-no.*refuse"):
        env.nri.run_pod_sandbox(pod)
    env.nri.stop_pod_sandbox(pod)  # logged, not raised
    assert len(env.nri.plugins()) == 1  # a refusal is an answer: the plugin stays


@pytest.mark.parametrize("misbehaviour", ["stall", "garbage", "disconnect", "stop_reading"])
def test_a_misbehaving_plugin_is_disconnected_named_and_the_event_goes_on(
    env: Env, misbehaviour: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Behaviour(**{misbehaviour: {"CreateContainer"}})  # type: ignore[arg-type]
    env.plugin("bad", "10", bad)
    good = env.plugin("good", "20")
    pod = _pod("p")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vmcri.nri"):
        env.nri.create_container(pod, _container(pod, "c"))
    assert time.monotonic() - started < TIMEOUT_S * 3
    assert [p.name for p in env.nri.plugins()] == ["20-good"]
    assert "CREATE_CONTAINER" in [s.event for s in good.seen]
    assert "NRI plugin 10-bad: disconnected" in caplog.text


def test_a_stalled_plugin_does_not_hold_other_pods_calls(env: Env) -> None:
    env.plugin("slow", "10", Behaviour(stall={"CreateContainer"}, refuse_names={"never"}))
    pod, other = _pod("stalled"), _pod("other")
    stalled = threading.Thread(target=env.nri.create_container, args=(pod, _container(pod, "c")))
    stalled.start()
    wait_for(lambda: env.plugins[0].events_named("CREATE_CONTAINER"), 5, "the stalled call")
    started = time.monotonic()
    env.nri.run_pod_sandbox(other)  # the same plugin answers this one
    assert time.monotonic() - started < TIMEOUT_S / 2
    stalled.join(TIMEOUT_S * 3)
    assert not stalled.is_alive()


def test_an_external_plugin_with_a_bad_index_is_refused(env: Env) -> None:
    with pytest.raises(AssertionError, match=r"refused|did not answer"):
        ScriptedPlugin("x", "1a").connect(env.socket)
    assert env.nri.plugins() == []


def test_a_silent_plugin_is_dropped_after_the_registration_timeout(env: Env) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(env.socket)
    sock.settimeout(TIMEOUT_S * 4)
    assert sock.recv(1) == b""  # closed on us
    sock.close()


def test_updates_to_other_containers_are_applied(env: Env) -> None:
    pod = env.store.sandboxes.add(_pod("p"))
    other = env.store.containers.add(_container(pod, "other"))

    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        update = out.update.add(container_id=other.id)
        update.linux.resources.cpu.shares.value = 77
        return out

    env.plugin("up", "10", Behaviour(events=("CREATE_CONTAINER",), adjust=adjust))
    env.nri.create_container(pod, _container(pod, "new"))
    assert [(cid, r.cpu_shares) for cid, r in env.updates] == [(other.id, 77)]


def test_update_container_takes_the_plugins_resources_and_update_pod_is_relayed(
    env: Env,
) -> None:
    def update(req: nri_pb2.UpdateContainerRequest) -> nri_pb2.UpdateContainerResponse:
        out = nri_pb2.UpdateContainerResponse()
        mine = out.update.add(container_id=req.container.id)
        mine.linux.resources.memory.limit.value = 96 << 20
        return out

    plugin = env.plugin("upd", "10", Behaviour(update=update))
    pod = env.store.sandboxes.add(_pod("p"))
    record = env.store.containers.add(_container(pod, "c"))
    resources = env.nri.update_container(pod, record, Resources(cpu_shares=100))
    assert (resources.cpu_shares, resources.memory_limit_in_bytes) == (100, 96 << 20)
    env.nri.update_pod_sandbox(pod, None, Resources(cpu_shares=200))
    env.nri.post_update_pod_sandbox(pod)
    assert [s.event for s in plugin.seen][-3:] == [
        "UPDATE_CONTAINER",
        "UpdatePodSandbox",
        "PostUpdatePodSandbox",
    ]


def test_a_pod_made_while_a_plugin_synchronizes_is_not_missed(env: Env) -> None:
    made: list[ContainerRecord] = []

    def pod_appears() -> None:
        pod = env.store.sandboxes.add(_pod("during"))
        made.append(env.store.containers.add(_container(pod, "c")))

    plugin = env.plugin("late", "10", Behaviour(on_sync=pod_appears))
    assert [p.name for p in plugin.synced_pods] == []
    wait_for(lambda: len(plugin.seen) == 2, 5, "the catch-up events")
    assert [(s.event, s.pod, s.container) for s in plugin.seen] == [
        ("RUN_POD_SANDBOX", "during", ""),
        ("POST_CREATE_CONTAINER", "during", "c"),
    ]


def test_a_request_over_ttrpcs_bound_is_refused_without_dropping_the_plugin(env: Env) -> None:
    env.plugin("keep", "10")
    pod = _pod("p")
    big = _container(pod, "c")
    huge = (KeyValue("BIG", "x" * (5 << 20)),)
    big = dataclasses.replace(big, config=dataclasses.replace(big.config, envs=huge))
    with pytest.raises(PluginError, match="bound"):
        env.nri.create_container(pod, big)
    assert [p.name for p in env.nri.plugins()] == ["10-keep"]
