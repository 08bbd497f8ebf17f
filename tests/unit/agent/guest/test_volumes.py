"""The guest's side of SyncVolume with a fake mounter: emptyDirs made once per pod, copies
swapped in atomically below ``..data``, /etc/hosts written once, and refusals of a request
that breaks a bound before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.guest_mounter import FakeMounter
from vmcri.agent.guest.volumes import MAX_FILES, GuestVolumes
from vmcri.api import agent_pb2
from vmcri.errors import InvalidArgument

Kind = agent_pb2.VolumeKind


def _volumes(tmp_path: Path) -> tuple[GuestVolumes, FakeMounter]:
    mounter = FakeMounter()
    return GuestVolumes(tmp_path / "state", tmp_path / "scratch", mounter), mounter


def _copy(name: str, files: dict[str, bytes]) -> agent_pb2.SyncVolumeRequest:
    wire = [
        agent_pb2.VolumeFile(path=p, data=d, mode=0o640, uid=0, gid=0) for p, d in files.items()
    ]
    return agent_pb2.SyncVolumeRequest(name=name, kind=Kind.VOLUME_KIND_COPY, files=wire)


def test_a_copy_is_swapped_in_whole_and_old_generations_go(tmp_path: Path) -> None:
    volumes, mounter = _volumes(tmp_path)
    path = Path(volumes.sync(_copy("configmap~app", {"a": b"1", "dir/b": b"1"})).path)
    assert path == tmp_path / "state" / "volumes" / "configmap~app"
    assert (path / "a").read_bytes() == b"1" and (path / "dir" / "b").read_bytes() == b"1"
    assert os.readlink(path / "a") == "..data/a"
    assert os.stat(path / "a").st_mode & 0o777 == 0o640
    # The copies' own tmpfs, mounted once, nosuid and nodev.
    assert [m[1:3] for m in mounter.mounts] == [(str(tmp_path / "state" / "volumes"), "tmpfs")]
    first = os.readlink(path / "..data")

    volumes.sync(_copy("configmap~app", {"a": b"2", "c": b"2"}))

    assert (path / "a").read_bytes() == b"2" and (path / "c").read_bytes() == b"2"
    assert not (path / "dir").exists()  # a key kubelet dropped goes too
    now = os.readlink(path / "..data")
    assert now != first
    assert sorted(n for n in os.listdir(path) if n.startswith("..")) == sorted(["..data", now])
    assert len(mounter.mounts) == 1


def test_an_empty_dir_is_made_once_and_kept(tmp_path: Path) -> None:
    volumes, _ = _volumes(tmp_path)
    owner = agent_pb2.VolumeFile(mode=0o777, uid=0, gid=0)
    req = agent_pb2.SyncVolumeRequest(
        name="empty-dir~cache", kind=Kind.VOLUME_KIND_EMPTY_DIR, files=[owner]
    )
    path = Path(volumes.sync(req).path)
    assert path == tmp_path / "scratch" / "volumes" / "empty-dir~cache"
    (path / "kept").write_text("x")
    assert Path(volumes.sync(req).path) == path  # a second container of the pod
    assert (path / "kept").read_text() == "x"
    assert os.stat(path).st_mode & 0o777 == 0o777


def test_a_memory_empty_dir_is_a_tmpfs_no_bigger_than_the_guest(tmp_path: Path) -> None:
    volumes, mounter = _volumes(tmp_path)
    req = agent_pb2.SyncVolumeRequest(
        name="empty-dir~mem", kind=Kind.VOLUME_KIND_EMPTY_DIR_MEMORY, size_bytes=1 << 60,
        files=[agent_pb2.VolumeFile(mode=0o777)],
    )  # fmt: skip
    volumes.sync(req)
    volumes.sync(req)
    [(_, target, fstype, _, options)] = mounter.mounts
    assert fstype == "tmpfs" and target.endswith("empty-dirs/empty-dir~mem")
    size = int(options.split(",")[0].removeprefix("size="))
    assert 0 < size < 1 << 60


def test_a_file_is_written_once(tmp_path: Path) -> None:
    volumes, _ = _volumes(tmp_path)

    def req(data: bytes) -> agent_pb2.SyncVolumeRequest:
        file = agent_pb2.VolumeFile(data=data, mode=0o644)
        return agent_pb2.SyncVolumeRequest(
            name="etc-hosts", kind=Kind.VOLUME_KIND_FILE, files=[file]
        )

    path = Path(volumes.sync(req(b"127.0.0.1 localhost\n")).path)
    path.write_text("written in the pod\n")
    volumes.sync(req(b"other\n"))
    assert path.read_text() == "written in the pod\n"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_copy("../x", {"a": b""}), "name"),
        (_copy("ok", {"../a": b""}), "path"),
        (_copy("ok", {"/a": b""}), "path"),
        (_copy("ok", {"..data": b""}), "path"),
        (_copy("ok", {"a/./b": b""}), "path"),
        (_copy("ok", {"a": b"", "a/b": b""}), "both"),
        (_copy("ok", {f"f{i}": b"" for i in range(MAX_FILES + 1)}), "more than"),
        (_copy("ok", {"a": b"x" * (1 << 20)}), "bytes"),
        (agent_pb2.SyncVolumeRequest(name="ok", kind=Kind.VOLUME_KIND_UNKNOWN), "kind"),
    ],
)
def test_a_request_past_a_bound_is_refused_before_anything_is_written(
    tmp_path: Path, request_: agent_pb2.SyncVolumeRequest, field: str
) -> None:
    volumes, mounter = _volumes(tmp_path)
    with pytest.raises(InvalidArgument, match=field):
        volumes.sync(request_)
    assert mounter.mounts == [] and not (tmp_path / "state").exists()
