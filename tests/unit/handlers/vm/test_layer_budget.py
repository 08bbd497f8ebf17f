"""The disk promised to VM pods' writable layers (``vmcri/host/layer_space.py``) and the size a
new pod's layer gets (``vmcri/handlers/vm/layer_budget.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmcri.errors import ResourceExhausted
from vmcri.handlers.vm.layer_budget import layer_size
from vmcri.host.layer_space import LayerSpace, measure

MIB = 1 << 20


def test_a_layer_gets_its_size_while_the_promises_fit() -> None:
    space = LayerSpace(free_bytes=10_000 * MIB, promised_bytes=0, claimable_bytes=0, layers=0)
    assert layer_size(space, 4096, reserve_mib=1024) == 4096


def test_earlier_promises_not_yet_written_size_a_new_layer_down() -> None:
    # 8000 MiB free, 5000 MiB of earlier layers still unwritten, 1000 MiB kept free.
    space = LayerSpace(8000 * MIB, promised_bytes=6000 * MIB, claimable_bytes=5000 * MIB, layers=2)
    assert layer_size(space, 4096, reserve_mib=1000) == 2000


def test_no_room_for_the_smallest_layer_is_refused_naming_the_sizes() -> None:
    space = LayerSpace(8000 * MIB, promised_bytes=8000 * MIB, claimable_bytes=7000 * MIB, layers=3)
    with pytest.raises(ResourceExhausted) as refused:
        layer_size(space, 4096, reserve_mib=1000)
    message = refused.value.message
    parts = ["writable_layer_mib = 4096", "8000 MiB free", "7000 MiB is still promised"]
    parts += ["3 pods' layers", "1000 MiB is kept free", "writable_layer_reserve_mib"]
    for part in parts:
        assert part in message, (part, message)
    assert refused.value.code == "RESOURCE_EXHAUSTED"


def test_measure_counts_each_layer_once_and_what_it_has_written(tmp_path: Path) -> None:
    backends = tmp_path / "backends"
    for handler, pod, size_mib, written_mib in (("vm", "a", 64, 8), ("vmcold", "b", 32, 0)):
        (backends / handler / pod).mkdir(parents=True)
        with open(backends / handler / pod / "writable.img", "wb") as image:
            image.truncate(size_mib * MIB)  # sparse, as sized_fs makes it
            image.write(b"\1" * (written_mib * MIB))
            image.flush()
            os.fsync(image.fileno())
    (backends / "vm" / "templates").symlink_to(backends / "vm" / "a")  # not followed
    (backends / "vm" / "c").mkdir()  # a pod without a sized layer
    space = measure(backends)
    assert (space.layers, space.promised_bytes) == (2, 96 * MIB)
    # The written 8 MiB are no longer free: they are not counted as claimable again.
    assert 87 * MIB <= space.claimable_bytes <= 88 * MIB
    fs = os.statvfs(backends)
    assert abs(space.free_bytes - fs.f_bavail * fs.f_frsize) < 64 * MIB
