from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.support.records import container, sandbox
from vmcri.errors import AlreadyExists, InvalidArgument, InvalidTransition, NotFound
from vmcri.ids import is_id, new_id
from vmcri.store.records import ContainerState, SandboxState
from vmcri.store.store import Store


def test_ids_are_64_hex() -> None:
    assert is_id(new_id())
    assert new_id() != new_id()


def test_round_trip_through_disk(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.sandboxes.add(sandbox())
    c = store.containers.add(container(s.id))
    store.sandboxes.set_fields(s.id, state=SandboxState.READY, runtime={"k": "v"})

    reloaded = Store(tmp_path)
    assert reloaded.load() == []
    got = reloaded.sandboxes.get(s.id)
    assert got.state is SandboxState.READY and got.runtime == {"k": "v"}
    assert got.config == s.config
    assert reloaded.containers.get(c.id) == c


def test_names_are_unique(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.sandboxes.add(sandbox("web"))
    with pytest.raises(AlreadyExists, match="web"):
        store.sandboxes.add(sandbox("web"))
    store.sandboxes.add(sandbox("web", attempt=1))


def test_name_is_free_after_remove(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.sandboxes.add(sandbox("web"))
    store.sandboxes.remove(s.id)
    store.sandboxes.remove(s.id)  # idempotent
    store.sandboxes.add(sandbox("web"))
    assert not (tmp_path / "sandboxes" / f"{s.id}.json").exists()


def test_prefix_lookup(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.sandboxes.add(sandbox())
    assert store.sandboxes.get(s.id[:8]).id == s.id
    with pytest.raises(NotFound):
        store.sandboxes.get("f" * 64 if not s.id.startswith("f") else "0" * 64)


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = dataclasses.replace(sandbox("a"), id="ab" + "0" * 62)
    b = dataclasses.replace(sandbox("b"), id="ab" + "1" * 62)
    store.sandboxes.add(a)
    store.sandboxes.add(b)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        store.sandboxes.get("ab")


def test_state_machine_is_enforced(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.sandboxes.add(sandbox())
    store.sandboxes.set_fields(s.id, state=SandboxState.NOTREADY)
    with pytest.raises(InvalidTransition, match="NOTREADY to READY"):
        store.sandboxes.set_fields(s.id, state=SandboxState.READY)
    c = store.containers.add(container(s.id))
    store.containers.set_fields(c.id, state=ContainerState.EXITED)
    with pytest.raises(InvalidTransition):
        store.containers.set_fields(c.id, state=ContainerState.RUNNING)
    # A refused change leaves memory and disk as they were.
    reloaded = Store(tmp_path)
    reloaded.load()
    assert reloaded.sandboxes.get(s.id).state is SandboxState.NOTREADY


def test_update_cannot_change_identity(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.sandboxes.add(sandbox())
    with pytest.raises(InvalidArgument):
        store.sandboxes.update(s.id, lambda r: dataclasses.replace(r, id=new_id()))


def test_corrupt_file_is_quarantined_and_the_rest_loads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    good = store.sandboxes.add(sandbox("good"))
    bad_id = new_id()
    (tmp_path / "sandboxes" / f"{bad_id}.json").write_text("{not json")
    wrong_shape = new_id()
    (tmp_path / "sandboxes" / f"{wrong_shape}.json").write_text(json.dumps({"id": wrong_shape}))
    (tmp_path / "sandboxes" / ".x.json.tmp").write_text("half written")

    reloaded = Store(tmp_path)
    problems = reloaded.load()
    assert len(problems) == 2
    assert [s.id for s in reloaded.sandboxes.list()] == [good.id]
    quarantined = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert quarantined == sorted([f"sandbox-{bad_id}.json", f"sandbox-{wrong_shape}.json"])
    assert not (tmp_path / "sandboxes" / ".x.json.tmp").exists()
