"""A VM pod's host-path mounts (``vmcri/handlers/vm/volumes.py``): what the host binds with
which flags and propagation, what the guest's bind is, and what a VM cannot give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmcri.errors import InvalidArgument
from vmcri.handlers.vm.layout import GUEST_SHARE, SandboxLayout
from vmcri.handlers.vm.volumes import mount_volumes
from vmcri.ids import new_id
from vmcri.model import ContainerConfig, Metadata, Mount, MountPropagation
from vmcri.store.records import ContainerRecord


class RecordingMounter:
    def __init__(self) -> None:
        self.binds: list[tuple[Path, dict[str, object]]] = []

    def bind(self, source: Path, target: Path, readonly: bool = False, **flags: object) -> None:
        self.binds.append((source, {"readonly": readonly, **flags}))


def _container(*mounts: Mount) -> ContainerRecord:
    config = ContainerConfig(metadata=Metadata(name="c"), image="app:1", mounts=mounts)
    return ContainerRecord(
        id=new_id(), sandbox_id="s", config=config, image_id="sha256:x", image_name="x"
    )


def test_flags_and_propagation_are_the_hosts_and_the_guest_bind_follows(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "pod", tmp_path / "disk")
    (tmp_path / "v").mkdir()
    source = str(tmp_path / "v")
    h2c = MountPropagation.HOST_TO_CONTAINER
    mounts = (
        Mount("/ro", host_path=source, readonly=True),
        Mount("/rro", host_path=source, readonly=True, recursive_read_only=True),
        Mount("/h2c", host_path=source, readonly=True, propagation=h2c),
        Mount("/img", image="data:1", readonly=True),
    )
    container = _container(*mounts)
    mounter: Any = RecordingMounter()
    guest = mount_volumes(mounter, layout, container, layout.mount_namespace)
    pod = {"namespace": layout.mount_namespace}  # attached in the pod's namespace, each one
    assert [flags for _, flags in mounter.binds] == [
        {"readonly": True, "recursive_readonly": False, "follow_host": False, **pod},
        {"readonly": True, "recursive_readonly": True, "follow_host": False, **pod},
        {"readonly": True, "recursive_readonly": False, "follow_host": True, **pod},
    ]
    assert sorted(guest) == [0, 1, 2]  # image volumes are not host paths
    assert guest[0].host_path == f"{GUEST_SHARE}/containers/{container.id}/volumes/0"
    # No mount below the source: read-only in the guest too. With HostToContainer a later
    # host mount below it must stay writable, which a read-only guest bind would prevent.
    assert (guest[0].readonly, guest[1].readonly, guest[2].readonly) == (True, True, False)


def test_bidirectional_and_missing_paths_are_refused_before_any_mount(tmp_path: Path) -> None:
    layout = SandboxLayout(tmp_path / "pod", tmp_path / "disk")
    mounter: Any = RecordingMounter()
    bidi = Mount("/b", host_path=str(tmp_path), propagation=MountPropagation.BIDIRECTIONAL)
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[1\]\.propagation: Bidirectional"):
        mount_volumes(mounter, layout, _container(Mount("/a", host_path=str(tmp_path)), bidi))
    assert mounter.binds == []
    gone = Mount("/g", host_path=str(tmp_path / "gone"))
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[0\]\.host_path"):
        mount_volumes(mounter, layout, _container(gone))


def test_a_recursive_read_only_mount_the_cri_does_not_allow_is_refused_before_any_mount(
    tmp_path: Path,
) -> None:
    layout = SandboxLayout(tmp_path / "pod", tmp_path / "disk")
    mounter: Any = RecordingMounter()
    writable = Mount("/w", host_path=str(tmp_path), recursive_read_only=True)
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]\.recursive_read_only: needs readonly"):
        mount_volumes(mounter, layout, _container(writable))
    h2c = Mount(
        "/h",
        host_path=str(tmp_path),
        readonly=True,
        recursive_read_only=True,
        propagation=MountPropagation.HOST_TO_CONTAINER,
    )
    with pytest.raises(InvalidArgument, match=r"mounts\[1\]\.recursive_read_only: needs propa"):
        mount_volumes(mounter, layout, _container(Mount("/a", host_path=str(tmp_path)), h2c))
    assert mounter.binds == []
