"""The container state machine as the store enforces it, and exits folded through one update.

The diagram (``vmcri/store/records.py``)::

    CREATED ──▶ RUNNING ──▶ EXITED ──▶ (removed)
        │                     ▲
        └─────────────────────┘      (stopped or removed before it ran)
    any ──▶ UNKNOWN ──▶ RUNNING | EXITED   (lost contact, then found again)

These tests hold the store to it: every move the diagram draws is taken, every other one
is refused and leaves memory and disk as they were, and an exit decided inside
``Table.update`` is recorded once however many folders race for it.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from pathlib import Path

import pytest

from tests.support.records import container, sandbox
from vmcri.errors import InvalidTransition, NotFound
from vmcri.store.records import ContainerRecord, ContainerState
from vmcri.store.store import Store

CREATED, RUNNING, EXITED, UNKNOWN = (
    ContainerState.CREATED,
    ContainerState.RUNNING,
    ContainerState.EXITED,
    ContainerState.UNKNOWN,
)
# Written out from the diagram, not read from the code under test.
ALLOWED = {
    (CREATED, RUNNING),
    (CREATED, EXITED),
    (CREATED, UNKNOWN),
    (RUNNING, EXITED),
    (RUNNING, UNKNOWN),
    (UNKNOWN, RUNNING),
    (UNKNOWN, EXITED),
}
MOVES = [(a, b) for a, b in itertools.product(ContainerState, repeat=2) if a is not b]


def _store_with_container(tmp_path: Path, state: ContainerState) -> tuple[Store, ContainerRecord]:
    """A store holding one container that reached ``state`` the legal way, from CREATED."""
    store = Store(tmp_path)
    pod = store.sandboxes.add(sandbox())
    record = store.containers.add(container(pod.id))
    if state is not CREATED:
        record = store.containers.set_fields(record.id, state=state)
    return store, record


def _on_disk(store: Store, ident: str) -> ContainerRecord:
    reloaded = Store(store.root)
    assert reloaded.load() == []
    return reloaded.containers.get(ident)


def test_every_move_the_diagram_draws_is_a_move_of_the_store() -> None:
    assert {m for m in MOVES if m in ALLOWED} == ALLOWED  # the table above is not mistyped
    assert len(MOVES) - len(ALLOWED) == 5  # EXITED ends it; nothing goes back to CREATED


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str), ids=str)
def test_allowed_moves_are_taken_in_memory_and_on_disk(
    tmp_path: Path, old: ContainerState, new: ContainerState
) -> None:
    store, record = _store_with_container(tmp_path, old)
    moved = store.containers.set_fields(record.id, state=new)
    assert moved.state is new
    assert store.containers.get(record.id).state is new
    assert _on_disk(store, record.id).state is new


@pytest.mark.parametrize(("old", "new"), sorted(set(MOVES) - ALLOWED, key=str), ids=str)
def test_other_moves_are_refused_and_change_nothing(
    tmp_path: Path, old: ContainerState, new: ContainerState
) -> None:
    store, record = _store_with_container(tmp_path, old)
    path = tmp_path / "containers" / f"{record.id}.json"
    before = path.read_bytes()
    with pytest.raises(InvalidTransition) as refused:
        store.containers.update(
            record.id, lambda r: dataclasses.replace(r, state=new, exit_code=9, pid=42)
        )
    assert refused.value.message == (
        f"container {record.id} cannot go from {old.value} to {new.value}"
    )
    assert store.containers.get(record.id) == record  # the other fields did not land either
    assert path.read_bytes() == before


@pytest.mark.parametrize("state", list(ContainerState), ids=str)
def test_staying_put_is_allowed_and_may_change_other_fields(
    tmp_path: Path, state: ContainerState
) -> None:
    store, record = _store_with_container(tmp_path, state)
    updated = store.containers.set_fields(record.id, message="noted")
    assert (updated.state, updated.message) == (state, "noted")
    assert _on_disk(store, record.id) == updated


def test_a_whole_life_created_running_exited(tmp_path: Path) -> None:
    store, record = _store_with_container(tmp_path, CREATED)
    running = store.containers.set_fields(record.id, state=RUNNING, pid=4242, started_at=10)
    assert _on_disk(store, record.id) == running
    exited = store.containers.set_fields(
        record.id, state=EXITED, pid=0, finished_at=20, exit_code=3, reason="Error"
    )
    assert _on_disk(store, record.id) == exited
    assert (exited.started_at, exited.finished_at, exited.exit_code) == (10, 20, 3)
    with pytest.raises(InvalidTransition, match="EXITED to RUNNING"):
        store.containers.set_fields(record.id, state=RUNNING)  # no restart in place


def test_unknown_is_left_for_what_is_found_again(tmp_path: Path) -> None:
    store, record = _store_with_container(tmp_path, RUNNING)
    store.containers.set_fields(record.id, state=UNKNOWN, message="agent unreachable")
    found = store.containers.set_fields(record.id, state=RUNNING, message="")
    assert found.state is RUNNING
    store.containers.set_fields(record.id, state=UNKNOWN)
    gone = store.containers.set_fields(record.id, state=EXITED, exit_code=137)
    assert _on_disk(store, record.id).state is EXITED and gone.exit_code == 137
    with pytest.raises(InvalidTransition, match="EXITED to UNKNOWN"):
        store.containers.set_fields(record.id, state=UNKNOWN)


def test_a_change_that_raises_leaves_the_record(tmp_path: Path) -> None:
    store, record = _store_with_container(tmp_path, RUNNING)

    def broken(r: ContainerRecord) -> ContainerRecord:
        raise RuntimeError("the backend said no")

    with pytest.raises(RuntimeError, match="the backend said no"):
        store.containers.update(record.id, broken)
    assert store.containers.get(record.id) == record
    assert _on_disk(store, record.id) == record


def test_updating_a_removed_container_is_not_found(tmp_path: Path) -> None:
    store, record = _store_with_container(tmp_path, EXITED)
    store.containers.remove(record.id)
    with pytest.raises(NotFound, match=record.id):
        store.containers.set_fields(record.id, state=EXITED)


def test_racing_exit_folders_record_one_exit(tmp_path: Path) -> None:
    """The reaper, StopContainer and an exit event may all see RUNNING; the first wins.

    Each folder decides inside ``update``: the change function runs under the store's
    lock on the record as it is then, so only one of them finds it RUNNING.
    """
    store, record = _store_with_container(tmp_path, RUNNING)
    folders = 8
    start = threading.Barrier(folders)
    inside = threading.Semaphore(1)
    overlapped: list[int] = []
    results: dict[int, ContainerRecord] = {}

    def fold(code: int) -> None:
        def change(r: ContainerRecord) -> ContainerRecord:
            if not inside.acquire(blocking=False):
                overlapped.append(code)
            try:
                if r.state is EXITED:
                    return r  # already folded: the first exit stands
                return dataclasses.replace(r, state=EXITED, exit_code=code, pid=0)
            finally:
                inside.release()

        start.wait(5)
        results[code] = store.containers.update(record.id, change)

    threads = [threading.Thread(target=fold, args=(code,)) for code in range(1, folders + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert overlapped == []  # no two change functions ran at once
    assert len(results) == folders
    final = store.containers.get(record.id)
    assert final.state is EXITED and final.exit_code in results
    assert all(r == final for r in results.values())  # every folder saw the one exit
    assert _on_disk(store, final.id) == final
