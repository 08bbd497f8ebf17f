"""The guest's event log: exits are kept, output is dropped oldest first over its budget."""

from __future__ import annotations

from collections.abc import Callable

from vmcri.agent.guest.events import EventLog
from vmcri.api import agent_pb2


def _output(data: bytes) -> Callable[[agent_pb2.Event], None]:
    def fill(event: agent_pb2.Event) -> None:
        event.output.container_id = "c"
        event.output.stream = agent_pb2.OUTPUT_STREAM_STDOUT
        event.output.data = data

    return fill


def _exit(event: agent_pb2.Event) -> None:
    event.container_exited.container_id = "c"


def test_event_log_keeps_exits_and_drops_oldest_output_over_budget() -> None:
    log = EventLog(max_bytes=1000, clock=lambda: 42)
    for _ in range(5):
        log.append(_output(b"x" * 300))
    log.append(_exit)
    with log.cond:
        kept = log.since(0)
    seqs = [seq for seq, _ in kept]
    assert seqs[-1] == 6 and log.dropped >= 2
    assert agent_pb2.Event.FromString(kept[-1][1]).HasField("container_exited")
    log.ack(5)
    with log.cond:
        assert [seq for seq, _ in log.since(0)] == [6]
