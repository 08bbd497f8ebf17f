"""GetContainerEvents through the real daemon: one runc container's whole life."""

from __future__ import annotations

import threading

import grpc
import pytest

from tests.integration.cri.conftest import CriEnv
from tests.support.wait import wait_for, wait_until
from vmcri.api import api_pb2 as pb

pytestmark = pytest.mark.integration


def test_lifecycle_events_arrive_in_order_with_the_pod_status(env: CriEnv) -> None:
    sandbox_id = env.run_pod("events")
    stream = env.runtime.GetContainerEvents(pb.GetEventsRequest())
    received: list[pb.ContainerEventResponse] = []

    def read() -> None:
        try:
            for event in stream:
                received.append(event)
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # The server subscribes when the call reaches it, and says nothing until an event
    # comes: create and remove probe containers until one of theirs arrives.
    probes: set[str] = set()

    def subscribed() -> bool:
        probe = env.create(sandbox_id, f"probe-{len(probes)}")
        probes.add(probe)
        env.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=probe), timeout=60)
        return any(e.container_id in probes for e in list(received))

    try:
        wait_for(subscribed, 30, "the event stream to deliver a probe's events")
        container_id = env.create(sandbox_id, "app")
        env.start(container_id)
        env.runtime.StopContainer(
            pb.StopContainerRequest(container_id=container_id, timeout=10), timeout=60
        )
        env.runtime.RemoveContainer(
            pb.RemoveContainerRequest(container_id=container_id), timeout=60
        )

        def mine() -> list[pb.ContainerEventResponse]:
            return [e for e in list(received) if e.container_id == container_id]

        assert wait_until(lambda: len(mine()) >= 4, timeout=15), mine()
    finally:
        stream.cancel()
        reader.join(timeout=10)
    events = mine()
    assert [e.container_event_type for e in events] == [
        pb.CONTAINER_CREATED_EVENT,
        pb.CONTAINER_STARTED_EVENT,
        pb.CONTAINER_STOPPED_EVENT,
        pb.CONTAINER_DELETED_EVENT,
    ]
    stamps = [e.created_at for e in events]
    assert stamps == sorted(stamps) and stamps[0] > 0
    for event in events:
        assert event.pod_sandbox_status.id == sandbox_id
        assert event.pod_sandbox_status.state == pb.SANDBOX_READY
        assert event.pod_sandbox_status.metadata.name == "events"
    created, started, stopped, _ = events
    assert {c.id: c.state for c in started.containers_statuses}[container_id] in (
        pb.CONTAINER_RUNNING,
        pb.CONTAINER_EXITED,  # the statuses are read when the event is sent
    )
    assert {c.id: c.state for c in stopped.containers_statuses}[container_id] == (
        pb.CONTAINER_EXITED
    )
    assert container_id in {c.id for c in created.containers_statuses}
