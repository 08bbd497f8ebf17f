"""A pod VM's disks (``handlers/vm/disks.py``) against the fake hypervisor: the writable
disk at LUN 0, each layer attached once at a free LUN and read-only, LUNs read back from
the live domain (a restarted daemon attaches nothing twice), each layer through a link in
the pod's own dir, and the rendered devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.hypervisor import FakeHypervisor
from vmcri.handlers.vm.disks import WRITABLE_LUN, PodDisks, link_layers
from vmcri.handlers.vm.domain import Disk
from vmcri.handlers.vm.render import render_disk

NAME = "vmcri-pod"


def _running() -> FakeHypervisor:
    hypervisor = FakeHypervisor()
    hypervisor.running.add(NAME)
    return hypervisor


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An image store's layers: layers/<chain>/layer.erofs."""
    for chain in ("top", "base", "other", "a", "b", "c"):
        (tmp_path / "layers" / chain).mkdir(parents=True)
        (tmp_path / "layers" / chain / "layer.erofs").write_bytes(chain.encode())
    (tmp_path / "pod" / "layers").mkdir(parents=True)
    return tmp_path


def _layer(store: Path, chain: str) -> Path:
    return store / "layers" / chain / "layer.erofs"


def _link(store: Path, chain: str) -> str:
    return str(store / "pod" / "layers" / chain / "layer.erofs")


def test_layers_are_attached_once_each_at_free_luns_in_the_order_asked(store: Path) -> None:
    hypervisor = _running()
    disks, links = PodDisks(hypervisor), store / "pod" / "layers"
    assert disks.attach_writable(NAME, Path("/root/pod/writable.img")) == WRITABLE_LUN
    first = disks.attach_layers(NAME, [_layer(store, "top"), _layer(store, "base")], links)
    second = disks.attach_layers(NAME, [_layer(store, "other"), _layer(store, "base")], links)
    assert first == [1, 2]
    assert second == [3, 2]
    assert hypervisor.disks(NAME) == {
        "/root/pod/writable.img": 0,
        _link(store, "top"): 1,
        _link(store, "base"): 2,
        _link(store, "other"): 3,
    }
    assert len(hypervisor.attached[NAME]) == 4


def test_a_restarted_daemon_reads_the_luns_back_from_the_domain(store: Path) -> None:
    hypervisor = _running()
    links = store / "pod" / "layers"
    PodDisks(hypervisor).attach_layers(NAME, [_layer(store, "a"), _layer(store, "b")], links)
    restarted = PodDisks(hypervisor)
    layers = [_layer(store, "c"), _layer(store, "a")]
    assert restarted.attach_layers(NAME, layers, links) == [3, 1]
    restarted.attach_writable(NAME, Path("/root/pod/writable.img"))
    restarted.attach_writable(NAME, Path("/root/pod/writable.img"))
    assert len(hypervisor.attached[NAME]) == 4


def test_a_layer_reaches_the_pod_as_a_hard_link_named_by_its_chain(store: Path) -> None:
    links = store / "pod" / "layers"
    (linked,) = link_layers([_layer(store, "a")], links)
    assert str(linked) == _link(store, "a") and linked.parent.name == "a"
    assert os.stat(linked).st_ino == os.stat(_layer(store, "a")).st_ino
    assert link_layers([_layer(store, "a")], links) == [linked]  # once


def test_saved_luns_are_attached_through_links_the_writable_disk_as_it_is(store: Path) -> None:
    hypervisor = _running()
    writable = store / "pod" / "writable.img"
    PodDisks(hypervisor).attach_at(
        NAME, {0: writable, 2: _layer(store, "b"), 1: _layer(store, "a")}, store / "pod" / "layers"
    )
    assert hypervisor.disks(NAME) == {str(writable): 0, _link(store, "a"): 1, _link(store, "b"): 2}


def test_a_layer_disk_is_read_only_and_the_writable_one_bypasses_the_host_cache() -> None:
    layer = render_disk(Disk("/l/a.erofs", 27, readonly=True))
    assert "<readonly/>" in layer and "cache='writeback'" in layer
    assert "<target dev='sdab' bus='scsi'/>" in layer
    assert "unit='27'" in layer
    writable = render_disk(Disk("/root/pod/writable.img", 0, readonly=False))
    assert "<readonly/>" not in writable and "cache='none' io='native'" in writable
    assert "<target dev='sda' bus='scsi'/>" in writable
