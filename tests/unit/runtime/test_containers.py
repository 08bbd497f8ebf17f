"""The container service's one stop algorithm and its exit folding, over the fake backend.

Stop: the record's stop signal, a wait for the exit event bounded by the timeout and the
RPC's deadline, then SIGKILL. An exit becomes EXITED in one store update, so an exit
event racing a StopContainer publishes STOPPED once.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.support.runtime import Runtime, wire
from vmcri.errors import DeadlineExceeded, SignatureRefused
from vmcri.model import ContainerConfig, ImageInfo, Metadata, PodConfig
from vmcri.runtime.events import ContainerEvent, EventType
from vmcri.store.records import ContainerState
from vmcri.supervisor.api import ContainerExit

IMAGE = ImageInfo(id="sha256:" + "b" * 64, name="example.test/app:1", layer_dirs=(), config={})


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = wire(tmp_path, IMAGE)
    bus = runtime.services.events
    published: list[ContainerEvent] = []
    real = bus.publish

    def publish(event: ContainerEvent) -> None:
        published.append(event)
        real(event)

    bus.publish = publish  # type: ignore[method-assign]
    runtime.published = published  # type: ignore[attr-defined]
    return runtime


def _running(rt: Runtime, stop_signal: str = "") -> str:
    uid = secrets.token_hex(4)
    pod = rt.pods.run(PodConfig(metadata=Metadata(name="p", uid=uid, namespace="ns")), "")
    config = ContainerConfig(metadata=Metadata(name="c"), image="app:1", stop_signal=stop_signal)
    container_id = rt.containers.create(pod, config)
    rt.containers.start(container_id)
    return container_id


def _events(rt: Runtime, container_id: str, kind: EventType) -> int:
    published: list[ContainerEvent] = rt.published  # type: ignore[attr-defined]
    return sum(1 for e in published if e.container_id == container_id and e.type is kind)


def test_stop_sends_the_records_stop_signal_and_folds_the_exit(rt: Runtime) -> None:
    cid = _running(rt, stop_signal="SIGUSR1")
    rt.containers.stop(cid, 30)
    record = rt.services.store.containers.get(cid)
    assert rt.supervisor.signals == [(cid, signal.SIGUSR1)]
    assert (record.state, record.exit_code) == (ContainerState.EXITED, 128 + signal.SIGUSR1)
    assert _events(rt, cid, EventType.STOPPED) == 1


def test_a_container_ignoring_its_stop_signal_is_killed_after_the_timeout(rt: Runtime) -> None:
    cid = _running(rt)
    rt.supervisor.ignored = {signal.SIGTERM}
    started = time.monotonic()
    rt.containers.stop(cid, 1)
    waited = time.monotonic() - started
    assert rt.supervisor.signals == [(cid, signal.SIGTERM), (cid, signal.SIGKILL)]
    assert 1.0 <= waited < 3.0
    assert rt.services.store.containers.get(cid).exit_code == 128 + signal.SIGKILL


def test_the_rpc_deadline_bounds_the_wait(rt: Runtime) -> None:
    cid = _running(rt)
    rt.supervisor.ignored = {signal.SIGTERM, signal.SIGKILL}
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="still running after SIGKILL"):
        rt.containers.stop(cid, 60, deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2.0
    assert rt.services.store.containers.get(cid).state is ContainerState.RUNNING


def test_timeout_zero_kills_at_once(rt: Runtime) -> None:
    cid = _running(rt)
    rt.containers.stop(cid, 0)
    assert rt.supervisor.signals == [(cid, signal.SIGKILL)]


def test_an_exit_event_racing_stop_publishes_stopped_once(rt: Runtime) -> None:
    for _ in range(20):
        cid = _running(rt)
        rt.supervisor.ignored = {signal.SIGTERM}
        go = threading.Barrier(2)

        def exit_event(container_id: str = cid, go: threading.Barrier = go) -> None:
            go.wait()
            rt.supervisor.end(container_id, 3)

        racer = threading.Thread(target=exit_event)
        racer.start()
        go.wait()
        rt.containers.stop(cid, 2)
        racer.join()
        rt.containers.status(cid)
        assert _events(rt, cid, EventType.STOPPED) == 1
        assert rt.services.store.containers.get(cid).state is ContainerState.EXITED


def test_an_exit_before_the_start_is_recorded_still_reads_started_then_stopped(
    rt: Runtime,
) -> None:
    pod = rt.pods.run(PodConfig(metadata=Metadata(name="p", uid="u", namespace="ns")), "")
    cid = rt.containers.create(pod, ContainerConfig(metadata=Metadata(name="c"), image="app:1"))
    real_start = rt.supervisor.start

    def start_and_exit_at_once(sandbox, container):  # type: ignore[no-untyped-def]
        pid = real_start(sandbox, container)
        rt.supervisor.end(container.id, 0)  # the exit event arrives before start returns
        return pid

    rt.supervisor.start = start_and_exit_at_once  # type: ignore[method-assign]
    rt.containers.start(cid)
    record = rt.services.store.containers.get(cid)
    assert record.state is ContainerState.EXITED and record.started_at > 0
    assert _events(rt, cid, EventType.STARTED) == 1
    assert _events(rt, cid, EventType.STOPPED) == 1


def test_stop_pod_kills_every_container_once(rt: Runtime) -> None:
    first = _running(rt)
    sandbox_id = rt.services.store.containers.get(first).sandbox_id
    config = ContainerConfig(metadata=Metadata(name="d"), image="app:1")
    second = rt.containers.create(sandbox_id, config)
    rt.containers.start(second)
    rt.pods.stop(sandbox_id)
    assert sorted(rt.supervisor.signals) == sorted(
        [(first, signal.SIGKILL), (second, signal.SIGKILL)]
    )
    for cid in (first, second):
        assert rt.services.store.containers.get(cid).state is ContainerState.EXITED


def test_an_exit_event_is_folded_as_it_arrives_with_its_code_and_reason(rt: Runtime) -> None:
    cid = _running(rt)
    rt.supervisor.end(cid, 3, "Error")
    # No status call, no refresh: the event carried the exit into the record.
    record = rt.services.store.containers.get(cid)
    assert record.state is ContainerState.EXITED
    assert (record.exit_code, record.reason) == (3, "Error")
    assert _events(rt, cid, EventType.STOPPED) == 1


def test_a_restarted_daemon_folds_the_exits_kept_on_disk_once(rt: Runtime) -> None:
    cid = _running(rt)
    # The daemon before kept the exit (on disk) and stopped before folding it.
    rt.supervisor.running.pop(cid)
    rt.supervisor.exits[cid] = ContainerExit(5, 1234, "Error", "killed")
    rt.containers.recover_exits()
    record = rt.services.store.containers.get(cid)
    assert record.state is ContainerState.EXITED
    assert (record.exit_code, record.finished_at, record.message) == (5, 1234, "killed")
    rt.containers.recover_exits()
    assert _events(rt, cid, EventType.STOPPED) == 1


class _NamespacedImages:
    """Pulled images, each accepted only by the signature policy of the namespaces listed."""

    def __init__(self, accepted_in: set[str]) -> None:
        self.accepted_in = accepted_in
        self.asked: list[tuple[str, str]] = []

    def image_for_container(self, ref: str, namespace: str = "") -> ImageInfo:
        self.asked.append((ref, namespace))
        if namespace not in self.accepted_in:
            raise SignatureRefused(f"SignatureValidationFailed: {ref} refused in {namespace}")
        return IMAGE


def test_create_asks_for_the_image_for_the_pods_namespace_and_leaves_nothing_when_refused(
    tmp_path: Path,
) -> None:
    images = _NamespacedImages({"relaxed"})
    rt = wire(tmp_path, IMAGE, images=images)
    strict = rt.pods.run(PodConfig(metadata=Metadata(name="s", uid="u1", namespace="strict")), "")
    config = ContainerConfig(metadata=Metadata(name="c"), image="app:1")
    with pytest.raises(SignatureRefused):
        rt.containers.create(strict, config)
    assert rt.services.store.containers.list() == []
    relaxed = rt.pods.run(PodConfig(metadata=Metadata(name="r", uid="u2", namespace="relaxed")), "")
    assert rt.containers.create(relaxed, config)
    assert images.asked == [("app:1", "strict"), ("app:1", "relaxed")]
