"""The plugins as vmcri calls them, over real sockets, with scripted plugins
(tests/support/nri_plugin.py): registration, subscription, order, refusals, conflicts,
synchronization, and plugins that stall, answer garbage or hang up."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.nri_plugin import Behaviour, ScriptedPlugin, Seen
from tests.support.wait import wait_for
from vmcri.api import nri_pb2
from vmcri.config import NriConfig
from vmcri.errors import PluginError
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, KeyValue, Metadata, PodConfig, Resources
from vmcri.nri.adaptation import Adaptation
from vmcri.store.records import ContainerRecord, ContainerState, SandboxRecord, SandboxState
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
        self.stopped: list[str] = []
        self.nri = Adaptation(
            config,
            self.store,
            lambda cid, r: self.updates.append((cid, r)),
            self._stop,
            lambda s: False,
        )
        self.nri.start()
        self.socket = config.socket_path
        self.plugins: list[ScriptedPlugin] = []

    def _stop(self, container_id: str, deadline: float) -> None:
        """What the container service's stop does, as far as the record shows: killed."""
        assert deadline > time.monotonic()
        self.stopped.append(container_id)
        self.store.containers.update(
            container_id,
            lambda r: dataclasses.replace(
                r, state=ContainerState.EXITED, exit_code=137, reason="Error", finished_at=1
            ),
        )

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
        "VALIDATE_CONTAINER_ADJUSTMENT",
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


def _running(env: Env, pod: SandboxRecord, name: str) -> ContainerRecord:
    record = env.store.containers.add(_container(pod, name))
    return env.store.containers.set_fields(record.id, state=ContainerState.RUNNING, pid=42)


def test_an_eviction_asked_during_create_container_is_carried_out_without_deadlock(
    env: Env,
) -> None:
    """The plugin calls UpdateContainers while it answers CreateContainer (its answer waits
    for nothing of ours): the create goes on, the victim is stopped with the reason."""
    pod = env.store.sandboxes.add(_pod("p"))
    victim = _running(env, pod, "victim")
    plugins: list[ScriptedPlugin] = []

    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        ask = nri_pb2.UpdateContainersRequest()
        ask.evict.add(container_id=victim.id, reason="node too hot")
        plugins[0].update_containers(ask, wait_s=None)
        return nri_pb2.CreateContainerResponse()

    plugins.append(env.plugin("evictor", "10", Behaviour(adjust=adjust)))
    created = env.nri.create_container(pod, _container(pod, "new"))
    assert created.config.metadata.name == "new"
    assert plugins[0].answer_to(plugins[0].last_call, 5).failed == []
    wait_for(lambda: env.store.containers.get(victim.id).reason == "Evicted", 5, "the eviction")
    after = env.store.containers.get(victim.id)
    assert after.state is ContainerState.EXITED
    assert after.message == "evicted by NRI plugin 10-evictor: node too hot"
    assert env.stopped == [victim.id]


def test_evictions_in_create_and_update_answers_are_carried_out(env: Env) -> None:
    pod = env.store.sandboxes.add(_pod("p"))
    first, second = _running(env, pod, "first"), _running(env, pod, "second")
    being_made = _container(pod, "new")

    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        out.evict.add(container_id=first.id, reason="make room")
        out.evict.add(container_id=req.container.id, reason="not a container yet")
        return out

    def update(req: nri_pb2.UpdateContainerRequest) -> nri_pb2.UpdateContainerResponse:
        out = nri_pb2.UpdateContainerResponse()
        out.evict.add(container_id=second.id, reason="too big")
        return out

    env.plugin("ev", "10", Behaviour(adjust=adjust, update=update))
    env.nri.create_container(pod, being_made)
    wait_for(lambda: env.store.containers.get(first.id).reason == "Evicted", 5, "first")
    env.nri.update_container(pod, env.store.containers.get(first.id), Resources())
    wait_for(lambda: env.store.containers.get(second.id).reason == "Evicted", 5, "second")
    assert env.stopped == [first.id, second.id]  # never the one being created


def _in_thread(work: Callable[[], object], threads: list[threading.Thread]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    threads.append(thread)


def test_a_synchronized_pod_is_not_told_again_by_its_event(env: Env) -> None:
    """A pod in the snapshot whose RunPodSandbox goes out once the plugin is in the list
    (sent while the catch-up runs, when the plugin is surely in): told once, by the
    snapshot."""
    synced = env.store.sandboxes.add(_pod("synced"))
    late: list[SandboxRecord] = []
    threads: list[threading.Thread] = []

    def on_event(seen: Seen) -> None:
        if seen == Seen("RUN_POD_SANDBOX", "late"):
            _in_thread(lambda: env.nri.run_pod_sandbox(synced), threads)

    behaviour = Behaviour(
        on_sync=lambda: late.append(env.store.sandboxes.add(_pod("late"))), on_event=on_event
    )
    plugin = env.plugin("once", "10", behaviour)
    wait_for(lambda: threads, 5, "the catch-up of the late pod")
    threads[0].join(5)
    assert [p.name for p in plugin.synced_pods] == ["synced"]
    assert plugin.events_named("RUN_POD_SANDBOX") == [Seen("RUN_POD_SANDBOX", "late")]


def test_a_caught_up_pod_is_not_told_again_by_its_event(env: Env) -> None:
    """A pod made after the snapshot, caught up, then its own RunPodSandbox: told once."""
    late: list[SandboxRecord] = []
    threads: list[threading.Thread] = []

    def on_event(seen: Seen) -> None:
        if seen == Seen("RUN_POD_SANDBOX", "late") and not threads:
            _in_thread(lambda: env.nri.run_pod_sandbox(late[0]), threads)

    behaviour = Behaviour(
        on_sync=lambda: late.append(env.store.sandboxes.add(_pod("late"))), on_event=on_event
    )
    plugin = env.plugin("once", "10", behaviour)
    wait_for(lambda: threads, 5, "the catch-up of the late pod")
    threads[0].join(5)
    assert not threads[0].is_alive()
    env.nri.stop_pod_sandbox(late[0])  # an event after both, to know they were answered
    wait_for(lambda: plugin.events_named("STOP_POD_SANDBOX"), 5, "StopPodSandbox")
    assert plugin.events_named("RUN_POD_SANDBOX") == [Seen("RUN_POD_SANDBOX", "late")]
    assert plugin.synced_pods == []


def test_a_container_created_as_the_plugin_joins_is_told_once(env: Env) -> None:
    """CreateContainer goes to the plugin while it is caught up; whether or not the
    catch-up then finds the container in the store, PostCreateContainer comes once."""
    late: list[SandboxRecord] = []
    threads: list[threading.Thread] = []

    def create() -> None:
        record = env.nri.create_container(late[0], _container(late[0], "c"))
        env.nri.post_create_container(late[0], env.store.containers.add(record))

    def on_event(seen: Seen) -> None:
        if seen == Seen("RUN_POD_SANDBOX", "late") and not threads:
            _in_thread(create, threads)

    behaviour = Behaviour(
        on_sync=lambda: late.append(env.store.sandboxes.add(_pod("late"))), on_event=on_event
    )
    plugin = env.plugin("once", "10", behaviour)
    wait_for(lambda: threads, 5, "the catch-up of the late pod")
    threads[0].join(5)
    env.nri.stop_pod_sandbox(late[0])
    wait_for(lambda: plugin.events_named("STOP_POD_SANDBOX"), 5, "StopPodSandbox")
    assert [(s.event, s.container) for s in plugin.seen] == [
        ("RUN_POD_SANDBOX", ""),
        ("CREATE_CONTAINER", "c"),
        ("VALIDATE_CONTAINER_ADJUSTMENT", "c"),
        ("POST_CREATE_CONTAINER", "c"),
        ("STOP_POD_SANDBOX", ""),
    ]


def test_a_validator_sees_the_merged_adjustment_and_its_owners_and_may_reject_it(
    env: Env,
) -> None:
    def adjust(req: nri_pb2.CreateContainerRequest) -> nri_pb2.CreateContainerResponse:
        out = nri_pb2.CreateContainerResponse()
        out.adjust.env.add(key="PLACED", value="1")
        out.adjust.linux.resources.cpu.cpus = "0"
        return out

    seen: list[nri_pb2.ValidateContainerAdjustmentRequest] = []

    def validate(
        req: nri_pb2.ValidateContainerAdjustmentRequest,
    ) -> nri_pb2.ValidateContainerAdjustmentResponse:
        seen.append(req)
        reject = req.container.name == "forbidden"
        return nri_pb2.ValidateContainerAdjustmentResponse(reject=reject, reason="no\nway")

    env.plugin("placer", "10", Behaviour(events=("CREATE_CONTAINER",), adjust=adjust))
    checker = env.plugin(
        "policy", "90", Behaviour(events=("VALIDATE_CONTAINER_ADJUSTMENT",), validate=validate)
    )
    pod = env.store.sandboxes.add(_pod("p"))
    made = env.nri.create_container(pod, _container(pod, "fine"))
    assert made.config.resources.cpuset_cpus == "0"
    (asked,) = seen
    assert [(p.name, p.index) for p in asked.plugins] == [("placer", "10")]
    assert [(e.key, e.value) for e in asked.adjust.env] == [("PLACED", "1")]
    owned = asked.owners.owners[made.id]
    assert owned.compound[nri_pb2.Field.Env].owners["PLACED"] == "10-placer"
    assert owned.simple[nri_pb2.Field.CPUSetCPUs] == "10-placer"
    assert [s.event for s in checker.seen] == ["VALIDATE_CONTAINER_ADJUSTMENT"]

    with pytest.raises(PluginError, match=r"validator 90-policy rejected .*'forbidden': no\?way"):
        env.nri.create_container(pod, _container(pod, "forbidden"))


def test_a_validator_that_gives_no_verdict_fails_the_creation(env: Env) -> None:
    behaviour = Behaviour(
        events=("VALIDATE_CONTAINER_ADJUSTMENT",), garbage={"ValidateContainerAdjustment"}
    )
    env.plugin("broken", "90", behaviour)
    pod = env.store.sandboxes.add(_pod("p"))
    with pytest.raises(PluginError, match="validator 90-broken gave no verdict"):
        env.nri.create_container(pod, _container(pod, "c"))
    # Gone now, it is consulted no more: creation works without it.
    assert env.nri.plugins() == []
    env.nri.create_container(pod, _container(pod, "c"))
