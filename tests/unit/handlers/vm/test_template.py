"""VM templates: what is verified before a restore, and the cold-boot fallback (fakes)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from vmcri.errors import HypervisorError, TemplateUnusable
from vmcri.handlers.vm.template import MIB, Shape, Templates, TemplateStore

SHAPE = Shape(
    guest_version="abc123",
    hypervisor="qemu 7002000 libvirt 9000000",
    domain_type="qemu",
    machine="q35",
    memory_mib=4,
    vcpus=1,
    tcg_cache_mib=32,
    share_driver="9p",
)


def fake_build(shape: Shape, staging: Path) -> None:
    with open(staging / "memory", "wb") as f:
        f.truncate(shape.memory_mib * MIB)
    (staging / "state").write_bytes(b"QEVM" + b"\x01" * 1000)


def built(tmp_path: Path) -> tuple[Templates, TemplateStore]:
    store = TemplateStore(tmp_path / "templates")
    templates = Templates(store, fake_build)
    assert templates.ensure(SHAPE) is not None
    return templates, store


def test_a_built_template_verifies_and_is_read_only(tmp_path: Path) -> None:
    templates, store = built(tmp_path)
    template = templates.get(SHAPE)
    assert template is not None and template.directory == store.path(SHAPE)
    assert template.state.stat().st_mode & 0o777 == 0o400
    assert not list(store.directory.glob(".staging-*"))  # nothing left of the build


@pytest.mark.parametrize(
    "damage",
    [
        "truncated state",
        "corrupt state",
        "truncated memory",
        "no meta",
        "garbage meta",
        "other guest image",
        "memory is a symlink",
    ],
)
def test_a_damaged_or_stale_template_is_refused_and_removed(tmp_path: Path, damage: str) -> None:
    templates, store = built(tmp_path)
    directory = store.path(SHAPE)
    for f in directory.iterdir():
        f.chmod(0o600)
    if damage == "truncated state":
        with open(directory / "state", "r+b") as state:
            state.truncate(10)
    elif damage == "corrupt state":
        data = bytearray((directory / "state").read_bytes())
        data[500] ^= 0xFF
        (directory / "state").write_bytes(bytes(data))
    elif damage == "truncated memory":
        with open(directory / "memory", "r+b") as memory:
            memory.truncate(MIB)
    elif damage == "no meta":
        (directory / "meta.json").unlink()
    elif damage == "garbage meta":
        (directory / "meta.json").write_text("{not json")
    elif damage == "other guest image":
        meta = json.loads((directory / "meta.json").read_text())
        meta["shape"]["guest_version"] = "def456"
        (directory / "meta.json").write_text(json.dumps(meta))
    elif damage == "memory is a symlink":
        (directory / "memory").unlink()
        (directory / "memory").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TemplateUnusable):
        store.verify(SHAPE)
    builds: list[Shape] = []
    started = threading.Event()

    def record(shape: Shape, staging: Path) -> None:
        builds.append(shape)
        started.set()
        raise HypervisorError("no VM in a unit test")

    templates = Templates(store, record)
    assert templates.get(SHAPE) is None  # the pod cold-boots
    assert not directory.exists()  # the broken template is gone
    assert started.wait(10) and templates.wait(10)
    assert builds == [SHAPE]  # and a new one was on its way


def test_a_template_of_another_shape_is_never_used(tmp_path: Path) -> None:
    _, store = built(tmp_path)
    for other in (replace(SHAPE, guest_version="new"), replace(SHAPE, memory_mib=8)):
        assert store.path(other) != store.path(SHAPE)
        with pytest.raises(TemplateUnusable):
            store.verify(other)


def test_a_failing_build_is_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    calls: list[Path] = []

    def fail(shape: Shape, staging: Path) -> None:
        calls.append(staging)
        (staging / "memory").write_bytes(b"partial")
        raise HypervisorError("libvirt said no")

    store = TemplateStore(tmp_path / "t")
    templates = Templates(store, fail)
    for _ in range(5):
        templates.want(SHAPE)
        assert templates.wait(10)
    assert len(calls) == 2
    assert all(not staging.exists() for staging in calls)  # no half-built template left
    ready, reason, _ = templates.summary()
    assert not ready and reason == "NoTemplate"


def test_a_broken_restore_discards_the_template(tmp_path: Path) -> None:
    templates, store = built(tmp_path)
    templates = Templates(store, lambda shape, staging: None)
    templates.broken(SHAPE, "QMP migrate-incoming: load of migration failed")
    assert not store.path(SHAPE).exists()
