"""The VM backend's routing of agent events to streaming sessions."""

from __future__ import annotations

import pytest

from vmcri.agent import types
from vmcri.agent.budget import ByteBudget, event_cost
from vmcri.supervisor import streams


def chunk(
    cid: str, exec_id: str, data: bytes, seq: int = 1, eof: bool = False
) -> types.OutputChunk:
    return types.OutputChunk(seq, cid, exec_id, "stdout", data, eof, 0, 0)


def test_exec_events_before_the_claim_are_kept_for_the_session() -> None:
    router = streams.StreamRouter()
    router(chunk("c1", "exec-1", b"early"))
    router(chunk("c1", "exec-2", b"other"))
    sink = router.claim_exec("c1", "exec-1")
    router(chunk("c1", "exec-1", b"late"))
    router(types.ExecExit(3, "c1", "exec-1", 5))
    got = [sink.get() for _ in range(3)]
    assert [getattr(e, "data", None) for e in got[:2]] == [b"early", b"late"]
    assert isinstance(got[2], types.ExecExit) and got[2].exit_code == 5
    other = router.claim_exec("c1", "exec-2")
    assert getattr(other.get(), "data", None) == b"other"


def test_stale_backlog_is_forgotten_and_bounded() -> None:
    now = [0.0]
    router = streams.StreamRouter(clock=lambda: now[0])
    for i in range(streams.BACKLOG_EVENTS + 10):
        router(chunk("c1", f"exec-{i}", b"x"))
    assert len(router._backlog) == streams.BACKLOG_EVENTS
    now[0] = streams.BACKLOG_AGE_S + 1
    router.claim_exec("c1", "nobody")
    assert len(router._backlog) == 0


def test_attach_gets_container_output_and_exit_but_not_exec_output() -> None:
    router = streams.StreamRouter()
    sink = router.attach("c1")
    router(chunk("c1", "", b"own"))
    router(chunk("c1", "exec-1", b"exec"))
    router(chunk("c2", "", b"neighbour"))
    router(types.ContainerExit(4, "c1", 0, False, 0))
    first, second = sink.get(), sink.get()
    assert getattr(first, "data", None) == b"own"
    assert isinstance(second, types.ContainerExit)
    router.detach("c1", sink)
    assert "c1" not in router._attached


def test_port_data_goes_to_its_stream_only() -> None:
    router = streams.StreamRouter()
    sink = router.add_port("pf-1")
    router(types.PortForwardData(1, "pf-2", b"not mine", False, ""))
    router(types.PortForwardData(2, "pf-1", b"mine", False, ""))
    event = sink.get()
    assert isinstance(event, types.PortForwardData) and event.data == b"mine"


def test_a_session_that_does_not_keep_up_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "STALL_S", 0.05)
    budget = ByteBudget(2 * event_cost(types.PortForwardData(0, "pf-1", b"x", False, "")))
    router = streams.StreamRouter(budget=budget)
    sink = router.add_port("pf-1")
    for i in range(4):
        router(types.PortForwardData(i, "pf-1", b"x", False, ""))
    assert sink.overflowed and sink.closed.is_set()
    assert budget.used == 0  # the dropped session gave its bytes back


def test_the_backlog_is_bounded_in_bytes_and_claims_move_the_charge() -> None:
    big = b"x" * (256 * 1024)
    router = streams.StreamRouter()
    for i in range(64):  # 16 MiB of exec output nobody claimed
        router(chunk("c1", f"exec-{i}", big))
    assert router.budget.used <= streams.BACKLOG_BYTES
    assert router.budget.used == sum(event_cost(e) for _, e in router._backlog)
    newest = router._backlog[-1][1]
    assert isinstance(newest, types.OutputChunk) and newest.exec_id == "exec-63"
    sink = router.claim_exec("c1", "exec-63")
    assert router.budget.used == sum(event_cost(e) for _, e in router._backlog) + event_cost(newest)
    sink.close()  # a closed session holds nothing
    assert router.budget.used == sum(event_cost(e) for _, e in router._backlog)


def test_sessions_share_the_pods_budget_and_reading_gives_it_back() -> None:
    pot = ByteBudget(4 * event_cost(chunk("c1", "", b"x")))
    router = streams.StreamRouter(budget=pot)
    sink = router.attach("c1")
    for i in range(3):
        router(chunk("c1", "", b"x", seq=i))
    assert pot.used == 3 * event_cost(chunk("c1", "", b"x"))
    for _ in range(3):
        assert sink.get() is not None
    assert pot.used == 0
