"""A hostile pod agent against the host's volume sync (SyncVolume).

The guest answers SyncVolume with what it likes: a path out of its volumes, garbage, an
error, or nothing at all. Each test asserts that the host takes no such path into a spec,
that the one sync thread is never held by a pod's agent, and that every other pod's update
still reaches its guest within the poll.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from vmcri.agent import convert
from vmcri.agent.types import VolumeKind
from vmcri.api import agent_pb2
from vmcri.errors import DeadlineExceeded, ProtocolError
from vmcri.handlers.vm.guest_volumes import GuestVolume, Snapshot
from vmcri.handlers.vm.volume_sync import VolumeSync


@pytest.mark.parametrize("path", ["relative/x", "/run/../etc", "/a/..", "/x\0y", "", "/" * 5000])
def test_a_bad_volume_path_from_the_agent_is_a_protocol_error(path: str) -> None:
    with pytest.raises(ProtocolError):
        convert.volume_path(agent_pb2.SyncVolumeResponse(path=path))


def _config_map(root: Path, name: str, value: str) -> GuestVolume:
    path = root / "pods" / name / "volumes" / "kubernetes.io~configmap" / "cm"
    path.mkdir(parents=True)
    (path / "key").write_text(value)
    return GuestVolume("configmap~cm", VolumeKind.COPY, str(path))


def test_an_agent_that_never_answers_or_answers_garbage_delays_no_other_pod(
    tmp_path: Path,
) -> None:
    hung = _config_map(tmp_path, "hung", "1")
    broken = _config_map(tmp_path, "broken", "1")
    good = _config_map(tmp_path, "good", "1")
    release = threading.Event()
    calls: dict[str, int] = {"hung": 0, "broken": 0}
    got: list[bytes] = []

    def never(volume: GuestVolume, snapshot: Snapshot) -> str:
        calls["hung"] += 1
        release.wait(30)  # an agent that never answers (the real client gives up at 10 s)
        raise DeadlineExceeded("agent did not answer")

    def garbage(volume: GuestVolume, snapshot: Snapshot) -> str:
        calls["broken"] += 1
        raise ProtocolError("agent answered 'ping', expected 'sync_volume'")

    def fine(volume: GuestVolume, snapshot: Snapshot) -> str:
        got.append(snapshot.files[0].data)
        return "/run/vmcri/volumes/configmap~cm"

    sync = VolumeSync(interval_s=0.05)
    try:
        sync.add("hung", hung, never, None)
        sync.add("broken", broken, garbage, None)
        sync.add("good", good, fine, None)
        wait_for(lambda: got == [b"1"] and calls["hung"] == 1, 10, "the first syncs")
        for volume in (hung, broken, good):
            tmp = Path(volume.host_path) / "key.tmp"
            tmp.write_text("2")
            os.replace(tmp, Path(volume.host_path) / "key")
        wait_for(lambda: got == [b"1", b"2"], 10, "the good pod's update, the hung one pending")
        assert calls["hung"] == 1  # one call in flight at most: the hung pod is skipped
        # A failed push is tried again, later (backing off).
        wait_for(lambda: calls["broken"] >= 2, 10, "the broken pod's retry")
        release.set()
        wait_for(lambda: calls["hung"] == 2, 10, "the hung pod's retry once its call ended")
    finally:
        release.set()
        sync.close()


def test_a_termination_message_past_kubelets_bound_is_a_protocol_error() -> None:
    def exited(message: bytes) -> agent_pb2.Event:
        event = agent_pb2.Event(seq=1)
        event.container_exited.container_id = "c" * 64
        event.container_exited.termination_message = message
        return event

    found = convert.event(exited(b"m" * 4096))
    assert getattr(found, "termination_message", None) == b"m" * 4096
    with pytest.raises(ProtocolError):
        convert.event(exited(b"m" * 4097))


def test_the_termination_message_goes_only_into_kubelets_regular_file(tmp_path: Path) -> None:
    """The host writes the message to the host path of the container's termination-log
    mount: never through a symlink planted there, never into a FIFO."""
    from vmcri.model import ContainerConfig, Metadata, Mount
    from vmcri.supervisor.termination import write_message

    target = tmp_path / "shadow"
    target.write_text("root:x\n")
    link = tmp_path / "link"
    os.symlink(target, link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_text("old, longer text\n")
    for path in (link, fifo, regular):
        config = ContainerConfig(
            metadata=Metadata(name="c"), image="i",
            mounts=(Mount("/dev/termination-log", str(path)),),
        )  # fmt: skip
        write_message(config, b"bye\n")
    assert target.read_text() == "root:x\n"
    assert regular.read_text() == "bye\n"
