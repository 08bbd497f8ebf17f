"""The host's sync of copied volumes (``volume_sync.py``) with a fake push: a change is sent
once, an unchanged volume never, the pod's list survives a daemon restart, and a pod's
name for a volume stands for one host path."""

from __future__ import annotations

from pathlib import Path

from tests.support.wait import wait_for
from vmcri.agent.types import VolumeKind
from vmcri.handlers.vm.guest_volumes import GuestVolume, Snapshot, read_volume
from vmcri.handlers.vm.volume_sync import VolumeSync


def _volume(tmp: Path, value: str) -> GuestVolume:
    path = tmp / "pods" / "u" / "volumes" / "kubernetes.io~secret" / "s"
    path.mkdir(parents=True, exist_ok=True)
    (path / "key").write_text(value)
    return GuestVolume("secret~s", VolumeKind.COPY, str(path))


def test_a_change_is_pushed_once_and_the_list_outlives_the_daemon(tmp_path: Path) -> None:
    sent: list[bytes] = []

    def push(volume: GuestVolume, snapshot: Snapshot) -> str:
        sent.append(snapshot.files[0].data)
        return "/g"

    volume = _volume(tmp_path, "1")
    record = tmp_path / "guest-volumes.json"
    sync = VolumeSync(interval_s=3600)  # ticks by hand
    sync.add("pod", volume, push, read_volume(volume).digest, record)
    sync.tick()
    assert sent == []  # the guest has this content already
    _volume(tmp_path, "2")
    sync.tick()
    wait_for(lambda: sent == [b"2"], 10, "the push")
    wait_for(lambda: not sync._pods["pod"].busy, 10, "the push")
    sync.tick()
    assert sent == [b"2"]

    again = VolumeSync(interval_s=3600)  # a restarted daemon: digests unknown, sent again
    again.load("pod", record, push)
    assert again.has("pod", volume.host_path)
    again.tick()
    wait_for(lambda: sent == [b"2", b"2"], 10, "the push")
    other = GuestVolume("secret~s", VolumeKind.COPY, str(tmp_path / "elsewhere"))
    assert not again.fits("pod", other)
    assert again.fits("another-pod", other)
