"""Placing a container's volumes in the guest (``pod_volumes.py``) against a fake agent:
what qualifies is placed once per pod, what does not is left to the share, and an agent
from before SyncVolume leaves everything on the share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from vmcri.agent.types import VolumeFile, VolumeKind
from vmcri.errors import InvalidArgument, Unimplemented
from vmcri.handlers.vm.layout import SandboxLayout
from vmcri.handlers.vm.pod_volumes import VmPodVolumes
from vmcri.handlers.vm.volumes import check_userns_volumes
from vmcri.model import (
    ContainerConfig,
    IDMapping,
    Metadata,
    Mount,
    NamespaceMode,
    NamespaceOptions,
    PodConfig,
    PodSecurity,
)
from vmcri.store.records import ContainerRecord, SandboxRecord
from vmcri.supervisor.containers import SupervisedContainers


class Agent:
    def __init__(self, known: bool = True) -> None:
        self.known = known
        self.calls: list[tuple[str, VolumeKind, tuple[VolumeFile, ...]]] = []

    def sync_volume(self, name: str, kind: VolumeKind, files: Any, **_: Any) -> str:
        if not self.known:
            raise Unimplemented("unknown call None")
        self.calls.append((name, kind, tuple(files)))
        return f"/run/vmcri/volumes/{name}"


class Pods(VmPodVolumes):
    def __init__(self, tmp: Path, agent: Agent) -> None:
        self._tmp = tmp
        link = type("Link", (), {"client": agent})()
        self._containers = cast(SupervisedContainers, type("C", (), {"link": lambda s, _: link})())

    def _layout(self, sandbox_id: str) -> SandboxLayout:
        (self._tmp / sandbox_id).mkdir(exist_ok=True)
        return SandboxLayout(self._tmp / sandbox_id, self._tmp / sandbox_id)


def _records(
    tmp: Path, *mounts: Mount, opts: NamespaceOptions | None = None
) -> tuple[SandboxRecord, ContainerRecord]:
    security = PodSecurity(namespace_options=opts or NamespaceOptions())
    pod = PodConfig(metadata=Metadata(name="p", uid="u", namespace="n"), security=security)
    sandbox = SandboxRecord("a" * 64, "vm", "vm", pod)
    config = ContainerConfig(metadata=Metadata(name="c"), image="busybox", mounts=mounts)
    return sandbox, ContainerRecord("c" * 64, "a" * 64, config, "sha256:" + "1" * 64, "busybox")


def _kubelet(tmp: Path) -> tuple[Mount, Mount, Mount]:
    pods = tmp / "kubelet" / "pods" / "u" / "volumes"
    (pods / "kubernetes.io~empty-dir" / "cache").mkdir(parents=True)
    (pods / "kubernetes.io~configmap" / "cm").mkdir(parents=True)
    (pods / "kubernetes.io~configmap" / "cm" / "key").write_text("v")
    (tmp / "host").mkdir()
    return (
        Mount("/cache", str(pods / "kubernetes.io~empty-dir" / "cache")),
        Mount("/cm", str(pods / "kubernetes.io~configmap" / "cm"), readonly=True),
        Mount("/host", str(tmp / "host")),
    )


def test_kubelet_volumes_are_placed_in_the_guest_and_host_paths_left(tmp_path: Path) -> None:
    agent = Agent()
    pods = Pods(tmp_path, agent)
    sandbox, container = _records(tmp_path / "state", *_kubelet(tmp_path))
    placed = pods._place_in_guest(sandbox, container)
    assert {i: m.host_path for i, m in placed.items()} == {
        0: "/run/vmcri/volumes/empty-dir~cache",
        1: "/run/vmcri/volumes/configmap~cm",
    }
    assert [(name, kind) for name, kind, _ in agent.calls] == [
        ("empty-dir~cache", VolumeKind.EMPTY_DIR),
        ("configmap~cm", VolumeKind.COPY),
    ]
    assert agent.calls[1][2][0].data == b"v"
    assert pods.in_guest(sandbox.id, container.config.mounts[1].host_path)
    assert not pods.in_guest(sandbox.id, container.config.mounts[2].host_path)
    assert (tmp_path / sandbox.id / "guest-volumes.json").exists()
    pods._forget_volumes(sandbox.id)


def test_an_agent_without_sync_volume_leaves_every_volume_on_the_share(tmp_path: Path) -> None:
    pods = Pods(tmp_path, Agent(known=False))
    sandbox, container = _records(tmp_path / "state", *_kubelet(tmp_path))
    assert pods._place_in_guest(sandbox, container) == {}
    assert not pods.in_guest(sandbox.id, container.config.mounts[0].host_path)


def test_a_user_namespaced_pods_copies_carry_mapped_owners_and_the_share_is_refused(
    tmp_path: Path,
) -> None:
    ids = (IDMapping(host_id=65536, container_id=0, length=65536),)
    opts = NamespaceOptions(userns_mode=NamespaceMode.POD, uid_mappings=ids, gid_mappings=ids)
    agent = Agent()
    pods = Pods(tmp_path, agent)
    mounts = _kubelet(tmp_path)
    sandbox, container = _records(tmp_path / "state", *mounts, opts=opts)
    placed = pods._place_in_guest(sandbox, container)
    (_, _, empty_dir), (_, _, copy) = agent.calls
    # The copy's file and directory: the host's owner (root here) as the pod's root.
    me = (Path(mounts[1].host_path) / "key").stat()
    assert {(f.uid, f.gid) for f in copy} == {(me.st_uid + 65536, me.st_gid + 65536)}
    # An emptyDir the guest ID-maps itself: its owner as on the host.
    assert empty_dir[0].uid == Path(mounts[0].host_path).stat().st_uid
    # The host path would go over the share: refused, naming it, before any mount.
    with pytest.raises(InvalidArgument, match=r"config\.mounts\[2\].*9p"):
        check_userns_volumes(sandbox, container, placed)
    check_userns_volumes(*_records(tmp_path, *mounts), placed)  # no user namespace: fine
    pods._forget_volumes(sandbox.id)
