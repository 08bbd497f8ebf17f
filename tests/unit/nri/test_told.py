"""Told: each object reaches a joining plugin once, by whichever account comes first."""

from __future__ import annotations

from vmcri.api import nri_pb2
from vmcri.nri.told import Told


def test_the_snapshot_blocks_creation_events_but_not_later_ones() -> None:
    told = Told()
    told.synchronized(["pod", "ctr"])
    assert not told.claim("pod", nri_pb2.RUN_POD_SANDBOX)
    assert not told.claim("ctr", nri_pb2.POST_CREATE_CONTAINER)
    assert not told.catch_up("pod")
    told.joined()
    assert told.claim("ctr", nri_pb2.START_CONTAINER)
    assert not told.claim("pod", nri_pb2.RUN_POD_SANDBOX)  # still: it was in the snapshot


def test_an_event_while_joining_keeps_the_catch_up_away_but_not_the_next_step() -> None:
    told = Told()
    assert told.claim("ctr", nri_pb2.CREATE_CONTAINER)
    assert not told.catch_up("ctr")
    assert told.claim("ctr", nri_pb2.POST_CREATE_CONTAINER)


def test_the_catch_up_first_keeps_the_event_away() -> None:
    told = Told()
    assert told.catch_up("pod")
    assert not told.claim("pod", nri_pb2.RUN_POD_SANDBOX)
    assert told.catch_up("ctr")
    assert not told.claim("ctr", nri_pb2.POST_CREATE_CONTAINER)


def test_a_removal_while_joining_is_not_followed_by_a_catch_up() -> None:
    told = Told()
    assert told.claim("pod", nri_pb2.REMOVE_POD_SANDBOX)
    assert not told.catch_up("pod")


def test_marks_are_dropped_on_removal_and_new_objects_leave_none() -> None:
    told = Told()
    told.synchronized(["old"])
    told.joined()
    assert told.claim("new", nri_pb2.RUN_POD_SANDBOX)
    assert told.claim("new", nri_pb2.RUN_POD_SANDBOX)  # no marks after the join
    assert told.claim("old", nri_pb2.REMOVE_POD_SANDBOX)
    assert told._marks == {}
