"""A pod VM's disks (``handlers/vm/disks.py``) against the fake hypervisor: the writable
disk at LUN 0, each layer attached once at a free LUN and read-only, LUNs read back from
the live domain (a restarted daemon attaches nothing twice), and the rendered devices."""

from __future__ import annotations

from pathlib import Path

from tests.support.hypervisor import FakeHypervisor
from vmcri.handlers.vm.disks import WRITABLE_LUN, PodDisks
from vmcri.handlers.vm.domain import Disk
from vmcri.handlers.vm.render import render_disk

NAME = "vmcri-pod"


def _running() -> FakeHypervisor:
    hypervisor = FakeHypervisor()
    hypervisor.running.add(NAME)
    return hypervisor


def test_layers_are_attached_once_each_at_free_luns_in_the_order_asked() -> None:
    hypervisor = _running()
    disks = PodDisks(hypervisor)
    assert disks.attach_writable(NAME, Path("/root/pod/writable.img")) == WRITABLE_LUN
    first = disks.attach_layers(NAME, [Path("/l/top.erofs"), Path("/l/base.erofs")])
    second = disks.attach_layers(NAME, [Path("/l/other.erofs"), Path("/l/base.erofs")])
    assert first == [1, 2]
    assert second == [3, 2]
    assert hypervisor.disks(NAME) == {
        "/root/pod/writable.img": 0,
        "/l/top.erofs": 1,
        "/l/base.erofs": 2,
        "/l/other.erofs": 3,
    }
    assert len(hypervisor.attached[NAME]) == 4


def test_a_restarted_daemon_reads_the_luns_back_from_the_domain() -> None:
    hypervisor = _running()
    PodDisks(hypervisor).attach_layers(NAME, [Path("/l/a.erofs"), Path("/l/b.erofs")])
    restarted = PodDisks(hypervisor)
    assert restarted.attach_layers(NAME, [Path("/l/c.erofs"), Path("/l/a.erofs")]) == [3, 1]
    restarted.attach_writable(NAME, Path("/root/pod/writable.img"))
    restarted.attach_writable(NAME, Path("/root/pod/writable.img"))
    assert len(hypervisor.attached[NAME]) == 4


def test_a_layer_disk_is_read_only_and_the_writable_one_bypasses_the_host_cache() -> None:
    layer = render_disk(Disk("/l/a.erofs", 27, readonly=True))
    assert "<readonly/>" in layer and "cache='writeback'" in layer
    assert "<target dev='sdab' bus='scsi'/>" in layer
    assert "unit='27'" in layer
    writable = render_disk(Disk("/root/pod/writable.img", 0, readonly=False))
    assert "<readonly/>" not in writable and "cache='none' io='native'" in writable
    assert "<target dev='sda' bus='scsi'/>" in writable
